pub mod daemon;
pub mod lab;
pub mod pagerduty;
pub mod stub_hub;
