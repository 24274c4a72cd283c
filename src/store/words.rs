//! The closed sets of words the store keeps in TEXT columns — incident and ticket kinds, timeline kinds, event
//! actions, outbox states, silence sources — each bound and read through one `ToSql`/`FromSql`, as are hub names
//! and incident keys. A word no version of hubwatch wrote is an error when read (reported once by
//! [`Unreadable`]), never taken for a default; a query's fixed condition names its words through [`is`] and
//! [`among`], never typed into the SQL.

use super::incidents::TimelineKind;
use super::outbox::OutboxState;
use crate::domain::{EventAction, HubName, IncidentKey, IncidentKind, SilenceSource, TicketKind};
use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use std::collections::HashSet;
use std::sync::Mutex;

/// A value stored as one of a closed set of words.
pub trait Word: Copy {
    fn word(self) -> &'static str;
}

macro_rules! stored_words {
    ($($word:ty),*) => {$(
        impl Word for $word {
            fn word(self) -> &'static str {
                self.as_str()
            }
        }

        impl ToSql for $word {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $word {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$word>::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("{text:?} is not a known {}", stringify!($word)).into())
                })
            }
        }
    )*};
}

stored_words!(IncidentKind, TicketKind, TimelineKind, EventAction, OutboxState, SilenceSource);

/// The names kept in TEXT columns: bound as their text, read back as what the store wrote.
macro_rules! stored_names {
    ($($name:ty => $make:path),*) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                Ok($make(value.as_str()?))
            }
        }
    )*};
}

stored_names!(HubName => HubName::new, IncidentKey => IncidentKey::from);

/// `column = 'word'`.
pub fn is(column: &str, word: impl Word) -> String {
    format!("{column} = '{}'", word.word())
}

/// `column IN ('word', …)`.
pub fn among<W: Word>(column: &str, words: &[W]) -> String {
    let words: Vec<String> = words.iter().map(|w| format!("'{}'", w.word())).collect();
    format!("{column} IN ({})", words.join(", "))
}

/// Rows that could not be read (a word no version of hubwatch wrote): each is left out of what is read and
/// reported once in the log, with its table and key.
#[derive(Debug, Default)]
pub struct Unreadable {
    pub(super) reported: Mutex<HashSet<(&'static str, String)>>,
}

impl Unreadable {
    pub fn report(&self, table: &'static str, key: &str, error: &rusqlite::Error) {
        if crate::sync::lock(&self.reported).insert((table, key.to_string())) {
            tracing::error!(table, key, %error, "a stored row cannot be read (written by another version?): left out");
        }
    }

    /// The rows of `table` that could be read; each with a word that could not is reported and left out.
    pub fn keep<T>(
        &self,
        table: &'static str,
        rows: impl Iterator<Item = rusqlite::Result<T>>,
    ) -> rusqlite::Result<Vec<T>> {
        let mut kept = Vec::new();
        for row in rows {
            match row {
                Ok(row) => kept.push(row),
                Err(e @ rusqlite::Error::FromSqlConversionFailure(..)) => self.report(table, &e.to_string(), &e),
                Err(e) => return Err(e),
            }
        }
        Ok(kept)
    }
}
