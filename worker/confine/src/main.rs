//! `outpost-confine`: applies a run's cgroup, rlimits, uid and Landlock domain to itself, then
//! execs the agent (or bubblewrap). See the library's docs.

fn main() {
    std::process::exit(outpost_confine::main_with(std::env::args_os().skip(1)));
}
