//! TLS certificate expiry of every https hub: an expired certificate (autohttps that stopped renewing) takes a
//! hub down for everyone at once, and gives weeks of warning. Every [`EVERY`], a TLS handshake with each hub
//! reads the certificate it serves; its `notAfter` becomes `hubwatch_tls_certificate_expiry_timestamp_seconds`
//! (the chart's alerts warn at 14 days, page at 3). The handshake accepts whatever certificate is served —
//! nothing is sent on this connection, it only reads the date, and an expired or untrusted certificate is
//! exactly what must still be read.

use crate::config::Config;
use crate::metrics::Metrics;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// How often every hub's certificate is read again.
pub const EVERY: Duration = Duration::from_secs(3600);
/// Deadline of one connection and handshake.
const HANDSHAKE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("the TLS handshake with {0} failed: {1}")]
    Handshake(String, String),
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0} served no certificate")]
    NoCertificate(String),
    #[error("the certificate {0} served cannot be read: {1}")]
    Unreadable(String, &'static str),
}

/// Reads every https hub's certificate now and every [`EVERY`] until `stop`, into `metrics`.
pub async fn watch(config: Arc<Config>, metrics: Arc<Metrics>, stop: CancellationToken) {
    loop {
        for hub in config.hubs.iter().filter(|h| h.url.scheme() == "https") {
            match expiry(&hub.url).await {
                Ok(at) => metrics.set_certificate_expiry(&hub.name, at),
                Err(e) => {
                    metrics.count_certificate_check_failure(&hub.name);
                    tracing::warn!(hub = %hub.name, error = %e, "cannot read the hub's TLS certificate");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// When the certificate `url`'s server presents expires.
pub async fn expiry(url: &url::Url) -> Result<SystemTime, CertificateError> {
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
    let address = format!("{host}:{}", url.port_or_known_default().unwrap_or(443));
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| CertificateError::Connect(address.clone(), e.to_string()))?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| CertificateError::Handshake(address.clone(), e.to_string()))?;
        let tls = connector()
            .connect(name, tcp)
            .await
            .map_err(|e| CertificateError::Handshake(address.clone(), e.to_string()))?;
        let (_, session) = tls.get_ref();
        let leaf = session.peer_certificates().and_then(|chain| chain.first().cloned());
        leaf.ok_or_else(|| CertificateError::NoCertificate(address.clone()))
    };
    let leaf = tokio::time::timeout(HANDSHAKE, handshake)
        .await
        .map_err(|_| CertificateError::Timeout(address.clone(), HANDSHAKE))??;
    not_after(&leaf).map_err(|why| CertificateError::Unreadable(address, why))
}

fn connector() -> TlsConnector {
    crate::http::install_crypto_provider();
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReadOnly))
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Accepts any certificate: this connection only reads the certificate's dates and sends nothing.
#[derive(Debug)]
struct ReadOnly;

impl ServerCertVerifier for ReadOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// One DER element: its tag, and where its content starts and ends in the input.
struct Element {
    tag: u8,
    content: std::ops::Range<usize>,
}

fn element(der: &[u8], at: usize) -> Result<Element, &'static str> {
    let tag = *der.get(at).ok_or("truncated")?;
    let first = *der.get(at + 1).ok_or("truncated")? as usize;
    let (length, header) = match first {
        short if short < 0x80 => (short, 2),
        long => {
            let bytes = long & 0x7f;
            if bytes == 0 || bytes > 4 {
                return Err("unsupported length");
            }
            let length =
                der.get(at + 2..at + 2 + bytes).ok_or("truncated")?.iter().fold(0usize, |n, b| n << 8 | *b as usize);
            (length, 2 + bytes)
        }
    };
    let start = at + header;
    let end = start.checked_add(length).filter(|end| *end <= der.len()).ok_or("truncated")?;
    Ok(Element { tag, content: start..end })
}

/// The certificate's `notAfter` (RFC 5280: Certificate → tbsCertificate → [version], serialNumber,
/// signature, issuer, validity → notBefore, notAfter).
pub fn not_after(der: &[u8]) -> Result<SystemTime, &'static str> {
    const SEQUENCE: u8 = 0x30;
    let certificate = element(der, 0)?;
    let tbs = element(der, certificate.content.start)?;
    if certificate.tag != SEQUENCE || tbs.tag != SEQUENCE {
        return Err("not a certificate");
    }
    let mut at = tbs.content.start;
    if element(der, at)?.tag == 0xa0 {
        at = element(der, at)?.content.end; // [0] version
    }
    for _ in 0..3 {
        at = element(der, at)?.content.end; // serialNumber, signature, issuer
    }
    let validity = element(der, at)?;
    if validity.tag != SEQUENCE {
        return Err("no validity");
    }
    let not_before = element(der, validity.content.start)?;
    let not_after = element(der, not_before.content.end)?;
    time(not_after.tag, &der[not_after.content])
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, text: &[u8]) -> Result<SystemTime, &'static str> {
    let text = std::str::from_utf8(text).map_err(|_| "a time that is not text")?;
    let digits = text.strip_suffix('Z').ok_or("a time not in UTC")?;
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i64 = digits[..2].parse().map_err(|_| "a bad year")?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits[..4].parse().map_err(|_| "a bad year")?, &digits[4..]),
        _ => return Err("an unknown time format"),
    };
    let field = |i: usize| rest[i..i + 2].parse::<i64>().map_err(|_| "a bad time");
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds).map(|s| UNIX_EPOCH + Duration::from_secs(s)).map_err(|_| "a time before 1970")
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_both_formats_read_as_unix_time() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(time(0x17, b"261130120000Z"), Ok(at(1_796_040_000)));
        assert_eq!(time(0x18, b"20261130120000Z"), Ok(at(1_796_040_000)));
        assert_eq!(time(0x17, b"700101000000Z"), Ok(at(0)));
        assert_eq!(time(0x18, b"20000229235959Z"), Ok(at(951_868_799)));
        assert!(time(0x17, b"261130120000+0100").is_err());
        assert!(time(0x18, b"2026").is_err());
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for der in
            [&b""[..], &[0x30][..], &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..], &[0x30, 0x03, 0x30, 0x01, 0x00][..]]
        {
            assert!(not_after(der).is_err(), "{der:?}");
        }
    }
}
