#![allow(dead_code)]
pub mod hubsim;
pub mod measure;
