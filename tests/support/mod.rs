pub mod lab;
pub mod stub_hub;
