//! An incremental server-sent-events parser for the spawn progress stream: `data:` lines only, bare blank
//! lines (keep-alives) skipped, and every event bounded in size so an endless or garbage stream cannot grow
//! memory.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an event larger than {limit} bytes")]
    EventTooLarge { limit: usize },
}

pub struct SseParser {
    line: Vec<u8>,
    data: String,
    limit: usize,
}

impl SseParser {
    pub fn new(limit: usize) -> Self {
        SseParser { line: Vec::new(), data: String::new(), limit }
    }

    /// Feeds bytes; returns the data of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, SseError> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                if self.line.len() >= self.limit {
                    return Err(SseError::EventTooLarge { limit: self.limit });
                }
                self.line.push(byte);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(&line)).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(std::mem::take(&mut self.data));
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                if self.data.len() + value.len() + 1 > self.limit {
                    return Err(SseError::EventTooLarge { limit: self.limit });
                }
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            // Comments (":...") and other fields (event:, id:, retry:) carry nothing the probe needs.
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalives_are_skipped_and_events_split_across_chunks() {
        let mut parser = SseParser::new(1024);
        assert!(parser.push(b"\n\n").unwrap().is_empty());
        assert!(parser.push(b"data: {\"progress\": 0,").unwrap().is_empty());
        let events = parser.push(b" \"message\": \"Server requested\"}\n\ndata: {\"ready\": true}\r\n\r\n").unwrap();
        assert_eq!(events, vec![r#"{"progress": 0, "message": "Server requested"}"#, r#"{"ready": true}"#]);
    }

    #[test]
    fn multi_line_data_is_joined_and_other_fields_ignored() {
        let mut parser = SseParser::new(1024);
        let events = parser.push(b": comment\nevent: x\nid: 3\ndata: a\ndata: b\n\n").unwrap();
        assert_eq!(events, vec!["a\nb"]);
    }

    #[test]
    fn an_endless_line_is_refused_at_the_limit() {
        let mut parser = SseParser::new(16);
        assert_eq!(parser.push(&[b'x'; 32]), Err(SseError::EventTooLarge { limit: 16 }));
        let mut parser = SseParser::new(16);
        assert_eq!(parser.push(b"data: 0123456789\ndata: 0123456789\n"), Err(SseError::EventTooLarge { limit: 16 }));
    }
}
