//! Lets the binary, tests and benches find the libpython they were built against at run time
//! (an rpath to its directory), so no environment variable is needed to run secsgate.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
