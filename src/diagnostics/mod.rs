//! Diagnostics: the Kubernetes evidence a responder would collect by hand in the first ten minutes, collected
//! when an incident opens (and refreshed when it changes), each section headed by the exact command it stands
//! for and laid out as kubectl prints it ([`kubectl`]). Bounded per section and in total, redacted
//! ([`redact`]), and time-boxed: every API call has a deadline, and a section that fails or is late says so.

mod autoscaler;
pub mod cause;
pub mod collect;
pub mod kubectl;

use crate::domain::wording::truncate;
use std::time::SystemTime;

/// A section longer than this keeps its head (tables: the header and the first rows) or its tail (logs: the
/// newest lines), with a note of what was cut.
pub const SECTION_LIMIT: usize = 24 * 1024;
/// All sections together. A PagerDuty event holds 512 KB; the rest of the event needs far less than the
/// remainder, and hubwatch's own page shows the same text.
pub const TOTAL_LIMIT: usize = 320 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// The command a responder can run again, e.g. `kubectl -n temple get pods -o wide`.
    pub command: String,
    /// What the command would print, or why it could not be had.
    pub output: Result<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Head,
    Tail,
}

impl Section {
    pub fn ok(command: impl Into<String>, output: String, keep: Keep) -> Self {
        Section { command: command.into(), output: Ok(bound(&output, SECTION_LIMIT, keep)) }
    }

    pub fn failed(command: impl Into<String>, reason: impl Into<String>) -> Self {
        Section { command: command.into(), output: Err(reason.into()) }
    }

    fn render(&self) -> String {
        match &self.output {
            Ok(text) => format!("$ {}\n{}", self.command, ensure_newline(text)),
            Err(reason) => format!("$ {}\n(not collected: {reason})\n", self.command),
        }
    }
}

fn ensure_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') { text.to_string() } else { format!("{text}\n") }
}

/// Cuts `text` to at most `limit` bytes at line boundaries, keeping its head or its tail.
pub fn bound(text: &str, limit: usize, keep: Keep) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let note_room = 80;
    let budget = limit.saturating_sub(note_room);
    match keep {
        Keep::Head => {
            let mut cut = floor_char_boundary(text, budget);
            if let Some(newline) = text[..cut].rfind('\n') {
                cut = newline + 1;
            }
            let dropped = text[cut..].lines().count();
            format!("{}[{dropped} more lines cut]\n", &text[..cut])
        }
        Keep::Tail => {
            let mut start = ceil_char_boundary(text, text.len() - budget);
            if let Some(newline) = text[start..].find('\n') {
                start += newline + 1;
            }
            let dropped = text[..start].lines().count();
            format!("[{dropped} earlier lines cut]\n{}", &text[start..])
        }
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_char_boundary(text: &str, mut at: usize) -> usize {
    while at < text.len() && !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// The evidence collected for one incident at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostics {
    pub collected_at: SystemTime,
    pub sections: Vec<Section>,
}

impl Diagnostics {
    /// The text attached to the page and shown on hubwatch's page, within [`TOTAL_LIMIT`].
    pub fn render(&self) -> String {
        let failed = self.sections.iter().filter(|s| s.output.is_err()).count();
        let mut out = format!(
            "Kubernetes diagnostics collected {} ({} sections{})\n\n",
            humantime::format_rfc3339_seconds(self.collected_at),
            self.sections.len(),
            if failed > 0 { format!(", {failed} not collected") } else { String::new() }
        );
        if let Some(cause) = self.likely_cause() {
            out.push_str(&format!("Likely cause: {cause}\n\n"));
        }
        for section in &self.sections {
            out.push_str(&section.render());
            out.push('\n');
        }
        if out.len() > TOTAL_LIMIT {
            return truncate(&out, TOTAL_LIMIT);
        }
        out
    }

    /// What the evidence says caused the outage, where it says so plainly ([`cause`]).
    pub fn likely_cause(&self) -> Option<String> {
        cause::likely_cause(self)
    }

    /// The commands collected, for the timeline.
    pub fn commands(&self) -> Vec<&str> {
        self.sections.iter().filter(|s| s.output.is_ok()).map(|s| s.command.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_tables_keep_their_head_and_long_logs_their_tail() {
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let head = bound(&text, 200, Keep::Head);
        assert!(head.starts_with("line 0\n") && head.ends_with("more lines cut]\n") && head.len() <= 200, "{head}");
        let tail = bound(&text, 200, Keep::Tail);
        assert!(tail.starts_with('[') && tail.ends_with("line 999\n") && tail.len() <= 200, "{tail}");
        assert_eq!(bound("short\n", 200, Keep::Head), "short\n");
    }

    #[test]
    fn a_section_that_failed_says_why_under_its_command() {
        let diagnostics = Diagnostics {
            collected_at: std::time::UNIX_EPOCH,
            sections: vec![
                Section::ok("kubectl -n temple get pvc", "No resources found.\n".into(), Keep::Head),
                Section::failed("kubectl get nodes", "forbidden: cannot list nodes"),
            ],
        };
        assert_eq!(
            diagnostics.render(),
            "Kubernetes diagnostics collected 1970-01-01T00:00:00Z (2 sections, 1 not collected)\n\n\
             $ kubectl -n temple get pvc\nNo resources found.\n\n\
             $ kubectl get nodes\n(not collected: forbidden: cannot list nodes)\n\n"
        );
        assert_eq!(diagnostics.commands(), vec!["kubectl -n temple get pvc"]);
    }
}
