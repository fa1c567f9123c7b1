//! Runs the bundled flatc with this process's arguments.
fn main() {
    let status = std::process::Command::new(flatc::flatc())
        .args(std::env::args_os().skip(1))
        .status()
        .expect("run flatc");
    std::process::exit(status.code().unwrap_or(1));
}
