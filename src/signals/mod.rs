//! Real-user signals: users whose server pods are stuck or crashing are affected users too ([`pods`]).
pub mod pods;
