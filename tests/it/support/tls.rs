//! Certificates made for a test with openssl (scripts/test.sh installs it).

use std::path::Path;
use std::process::Command;

/// A certificate authority named `name` and a server certificate for 127.0.0.1 it signed (openssl), as PEM
/// files in `dir`: `(the authority's certificate, the server's certificate, its key)`.
pub fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let file = |suffix: &str| dir.join(format!("{name}-{suffix}"));
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs (scripts/test.sh installs it)");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let (ca, ca_key, csr) = (format!("{name}-ca.crt"), format!("{name}-ca.key"), format!("{name}.csr"));
    let (cert, key, ext) = (format!("{name}-server.crt"), format!("{name}-server.key"), format!("{name}.ext"));
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-days", "2", "-subj", &format!("/CN={name} test CA"), "-keyout", &ca_key, "-out", &ca],
        ]
        .concat(),
    );
    openssl(&[&["req"], &ec[..], &["-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr]].concat());
    std::fs::write(dir.join(&ext), "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    (file("ca.crt"), file("server.crt"), file("server.key"))
}
