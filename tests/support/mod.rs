pub mod apiserver;
pub mod daemon;
pub mod golden;
pub mod k8s_fixtures;
pub mod lab;
pub mod outcomes;
pub mod pagerduty;
pub mod stub_hub;
