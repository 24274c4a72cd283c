//! `hubwatch hash-password`: the bcrypt hash of the password read from stdin, for `web.basic_auth_users`.

use std::io::BufRead;
use std::process::ExitCode;

/// The cost Prometheus' own documentation uses: about a tenth of a second per check (hubwatch remembers a
/// verified login for minutes, so a page load does not pay it per request).
const COST: u32 = 12;

pub fn command() -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut password) {
        eprintln!("hubwatch: cannot read the password from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("hubwatch: give the password on stdin, e.g. `hubwatch hash-password < password-file`");
        return ExitCode::from(super::BAD_CONFIG);
    }
    match bcrypt::hash(password, COST) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hubwatch: cannot hash the password: {e}");
            ExitCode::FAILURE
        }
    }
}
