//! The pod side of the supervisor: a tiny exec wrapper that ties a pod's life to ours.
//!
//! The supervisor does not start a pod's `command` directly but `kactivator exec-pod -- CMD…`
//! (this very binary, argv mode [`ARG`]). The wrapper arms the parent-death signal
//! (`PR_SET_PDEATHSIG` = SIGKILL), checks that its parent is still the supervisor that started
//! it (pid in [`PARENT_ENV`]; a different parent means the supervisor died before the signal
//! was armed), then `exec`s the command. `exec` keeps the pid, the process group and the
//! armed signal, so the supervisor's group SIGTERM/SIGKILL stop path is unchanged, and a pod
//! dies with the supervisor even when the supervisor is SIGKILLed. No `unsafe`: the work that
//! would otherwise need a `pre_exec` hook happens in a process of its own.
//!
//! Linux delivers the parent-death signal when the *thread* that forked the child exits, not
//! the process: see `supervisor::spawn` for which thread that is.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::ExitCode};

use nix::{
    sys::{prctl, signal::Signal},
    unistd::getppid,
};

/// `argv[1]` that turns this binary into the wrapper.
pub const ARG: &str = "exec-pod";
/// The supervisor's pid, set by the supervisor; not passed on to the pod.
pub const PARENT_ENV: &str = "KACTIVATOR_POD_PARENT";

/// `kactivator exec-pod [--] CMD [ARGS…]`: the `main` hook. Returns only on failure.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "--") {
        args.next();
    }
    let Some(program) = args.next() else {
        eprintln!("kactivator {ARG}: usage: kactivator {ARG} -- COMMAND [ARGS...]");
        return ExitCode::from(64);
    };
    let Some(parent) = std::env::var(PARENT_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        eprintln!("kactivator {ARG}: {PARENT_ENV} is not a pid; only the supervisor starts pods");
        return ExitCode::from(64);
    };
    if let Err(error) = prctl::set_pdeathsig(Signal::SIGKILL) {
        // Fail closed: a pod that could outlive its supervisor is not started.
        eprintln!("kactivator {ARG}: cannot arm the parent-death signal: {error}");
        return ExitCode::FAILURE;
    }
    // Armed only now: had the supervisor died in between, we were reparented and no signal
    // will ever come.
    if getppid().as_raw() != parent {
        eprintln!("kactivator {ARG}: the supervisor (pid {parent}) is gone; not starting the pod");
        return ExitCode::FAILURE;
    }
    let error = std::process::Command::new(&program)
        .args(args)
        .env_remove(PARENT_ENV)
        .exec();
    eprintln!(
        "kactivator {ARG}: cannot run {}: {error}",
        program.to_string_lossy()
    );
    // The shell's convention: 127 not found, 126 found but not runnable.
    ExitCode::from(if error.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    })
}
