//! hubwatch: watches managed JupyterHubs the way their users use them (log in, start a server, run code,
//! use Dask Gateway) and says precisely which step failed for whom.
//!
//! Stages of the flow, one module each: [`config`] → [`scheduler`] → [`probe`] → outcomes, observed by
//! [`metrics`]. The binary (`main.rs`) only parses arguments and calls [`cli::run`].

pub mod cli;
pub mod config;
pub mod daemon;
pub mod detector;
pub mod diagnostics;
pub mod discovery;
pub mod domain;
pub mod ha;
pub mod http;
pub mod incident;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod scheduler;
pub mod signals;
pub mod status;
pub mod store;
pub mod timefmt;
pub mod web;
