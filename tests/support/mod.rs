pub mod stub_hub;
