//! hubwatch: watches managed JupyterHubs the way their users use them (log in, start a server, run code,
//! use Dask Gateway) and says precisely which step failed for whom.
//!
//! The data flow, one module per stage: [`config`] → [`scheduler`] → [`probe`] → outcomes → the recorder
//! ([`incident::recorder`]: [`detector`], [`incident`] manager, [`store`]) → [`notify`] (PagerDuty), with
//! [`diagnostics`] and [`signals`] from Kubernetes; [`metrics`], [`status`] and [`web`] observe. The words
//! every stage shares are in [`domain`]; [`app`] wires it all and owns every task ([`tasks`]). The binary
//! (`main.rs`) only parses arguments and calls [`cli::run`].

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;

pub mod detector;
pub mod diagnostics;
pub mod discovery;
pub mod domain;
pub mod ha;
pub mod health;
pub mod http;
pub mod incident;
pub mod kubeapi;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod redact;
pub mod scheduler;
pub mod schema_check;
pub mod signals;
pub mod status;
pub mod store;
pub mod sync;
pub mod tasks;
pub mod timefmt;
pub mod web;
