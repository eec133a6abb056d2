//! The `secsgate` binary: parse the command line and hand over to [`secsgate::cli`].

fn main() {
    std::process::exit(secsgate::cli::main());
}
