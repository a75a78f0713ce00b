//! Seccomp: the OCI spec's `linux.seccomp` compiled to BPF by seccompiler in
//! the runtime (before fork), and installed by the container process as the
//! last step before exec; and the profile berth's CRI runtime gives for
//! `RuntimeDefault`.
//!
//! seccompiler builds filters with one action on a match and one otherwise,
//! while an OCI profile has a default action and one action per rule. The
//! profile becomes a stack of such filters, and the kernel returns the most
//! restrictive of their answers: one filter per non-allow rule action
//! (that action on a match, allow otherwise) and, when the default is not
//! allow, one that gives the default to every call no rule matches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{json, Value};

use super::rootfs::Step;

/// A compiled profile: filters to install in order, and seccomp(2) flags.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    filters: Vec<BpfProgram>,
    flags: libc::c_ulong,
}

/// Why a profile cannot be compiled.
#[derive(Debug, thiserror::Error)]
#[error("seccomp profile: {0}")]
pub struct SeccompError(String);

/// The layout of `struct sock_fprog` (linux/filter.h).
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

const CLONE_NAMESPACES: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Calls the RuntimeDefault profile refuses with EPERM, each unless the
/// container holds the capability that makes the call legitimate (as the
/// Docker and containerd default profiles let CAP_SYS_ADMIN mount).
const DENIED: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "mount",
            "umount",
            "umount2",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "pivot_root",
            "unshare",
            "setns",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "fanotify_init",
            "perf_event_open",
            "bpf",
            "vhangup",
            "swapon",
            "swapoff",
            "nfsservctl",
            "get_kernel_syms",
            "query_module",
            "uselib",
            "ustat",
            "_sysctl",
            "userfaultfd",
        ],
    ),
    // Keys are not namespaced: a container could read or fill the host's.
    ("", &["keyctl", "add_key", "request_key"]),
    ("CAP_SYS_PTRACE", &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"]),
    ("CAP_SYS_MODULE", &["init_module", "finit_module", "delete_module", "create_module"]),
    ("CAP_SYS_BOOT", &["reboot", "kexec_load", "kexec_file_load"]),
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at", "name_to_handle_at"]),
    ("CAP_SYS_NICE", &["set_mempolicy", "mbind", "move_pages", "migrate_pages"]),
    ("", &["vm86", "vm86old"]),
];

/// The profile for `RuntimeDefault`: everything is allowed except the
/// calls that reach past the container's namespaces and cgroups (mounts,
/// new namespaces, kernel keys, modules, BPF, tracing other processes,
/// rebooting, the clock, swap), which fail with EPERM. `clone3` fails with
/// ENOSYS, as in the Docker profile, because its flags are out of a
/// filter's reach and C libraries then fall back to `clone`, whose
/// namespace flags are checked. `capabilities` are the container's bounding
/// set (OCI names): a call its capability would allow stays allowed.
pub fn runtime_default(capabilities: &[String]) -> LinuxSeccomp {
    let holds = |cap: &str| capabilities.iter().any(|c| c == cap);
    let eperm = |names: Vec<String>, args: Option<Vec<LinuxSeccompArg>>| {
        let mut b = LinuxSyscallBuilder::default()
            .names(names)
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EPERM as u32);
        if let Some(args) = args {
            b = b.args(args);
        }
        b.build().expect("every field of a syscall rule is set")
    };
    let mut denied: Vec<String> = Vec::new();
    for (cap, names) in DENIED {
        if cap.is_empty() || !holds(cap) {
            denied.extend(names.iter().map(|n| n.to_string()));
        }
    }
    let mut syscalls: Vec<LinuxSyscall> = vec![eperm(denied, None)];
    if !holds("CAP_SYS_ADMIN") {
        for flag in CLONE_NAMESPACES {
            let arg = oci_spec::runtime::LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(flag)
                .value_two(flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()
                .expect("every field of a syscall argument is set");
            syscalls.push(eperm(vec!["clone".into()], Some(vec![arg])));
        }
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::ENOSYS as u32)
                .build()
                .expect("every field of a syscall rule is set"),
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(syscalls)
        .build()
        .expect("every field of a profile is set")
}

/// The bit that marks an x32-ABI call on x86_64 (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `AUDIT_ARCH_X86_64`, the arch seccomp reports for x86_64 and x32 calls.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// On x86_64, a filter that fails every x32-ABI call with ENOSYS. x32 calls
/// report the x86_64 arch but carry their own numbers (the native number
/// plus `X32_SYSCALL_BIT`), so rules by name never match them: on a kernel
/// with x32 enabled, a profile that allows by default would let
/// `mount | X32_SYSCALL_BIT` through. Containers get no x32 at all, as on a
/// kernel built without it.
fn x32_refusal() -> BpfProgram {
    use seccompiler::sock_filter;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // struct seccomp_data: nr at offset 0, arch at offset 4.
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        op(LD_W_ABS, 0, 0, 0),
        op(JSET_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// This machine's architecture as seccompiler names it.
fn native_arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        SeccompError(format!("no filters for architecture {}", std::env::consts::ARCH))
    })
}

/// An OCI action as seccompiler's JSON spells it.
fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<Value, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => json!("allow"),
        LinuxSeccompAction::ScmpActErrno => json!({ "errno": errno.unwrap_or(libc::EPERM as u32) }),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            json!("kill_thread")
        }
        LinuxSeccompAction::ScmpActKillProcess => json!("kill_process"),
        LinuxSeccompAction::ScmpActTrap => json!("trap"),
        LinuxSeccompAction::ScmpActLog => json!("log"),
        LinuxSeccompAction::ScmpActTrace => json!({ "trace": errno.unwrap_or(libc::EPERM as u32) }),
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError("SCMP_ACT_NOTIFY (seccomp agents) is not supported".into()))
        }
    })
}

/// One argument condition in seccompiler's JSON; libseccomp compares all
/// 64 bits, and so does this.
fn condition(arg: &LinuxSeccompArg) -> Result<Value, SeccompError> {
    if arg.index() > 5 {
        return Err(SeccompError(format!("argument index {} (at most 5)", arg.index())));
    }
    let (op, val) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (json!("ne"), arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (json!("lt"), arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (json!("le"), arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (json!("eq"), arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (json!("ge"), arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (json!("gt"), arg.value()),
        // (arg & value) == valueTwo
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            (json!({ "masked_eq": arg.value() }), arg.value_two().unwrap_or(0))
        }
    };
    Ok(json!({ "index": arg.index(), "type": "qword", "op": op, "val": val }))
}

/// The rules of one OCI syscall entry for one name: its conditions ANDed
/// in one rule, or, when one argument is named twice, one rule per
/// condition (ORed), as runc does.
fn rules(name: &str, args: &[LinuxSeccompArg]) -> Result<Vec<Value>, SeccompError> {
    if args.is_empty() {
        return Ok(vec![json!({ "syscall": name })]);
    }
    let conditions = args.iter().map(condition).collect::<Result<Vec<_>, _>>()?;
    let indexes: BTreeSet<usize> = args.iter().map(|a| a.index()).collect();
    Ok(if indexes.len() == args.len() {
        vec![json!({ "syscall": name, "args": conditions })]
    } else {
        conditions.into_iter().map(|c| json!({ "syscall": name, "args": [c] })).collect()
    })
}

/// Whether seccompiler knows `name` on `arch`; profiles name calls of every
/// architecture, and unknown ones are skipped as libseccomp skips them.
fn known(name: &str, arch: TargetArch) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, bool>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(k) = cache.lock().ok().and_then(|c| c.get(name).copied()) {
        return k;
    }
    let probe = json!({ "probe": {
        "mismatch_action": "allow",
        "match_action": "trap",
        "filter": [{ "syscall": name }],
    }});
    let k = seccompiler::compile_from_json(probe.to_string().as_bytes(), arch).is_ok();
    if let Ok(mut c) = cache.lock() {
        c.insert(name.to_string(), k);
    }
    k
}

/// Compiles a profile for this machine.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<Program, SeccompError> {
    let arch = native_arch()?;
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    // Rules by action, in the order first seen.
    let mut groups: Vec<(Value, Vec<Value>)> = Vec::new();
    for entry in profile.syscalls().as_deref().unwrap_or_default() {
        let act = action(entry.action(), entry.errno_ret())?;
        if act == default {
            continue;
        }
        let mut list = Vec::new();
        for name in entry.names() {
            if known(name, arch) {
                list.extend(rules(name, entry.args().as_deref().unwrap_or_default())?);
            }
        }
        match groups.iter_mut().find(|(a, _)| *a == act) {
            Some((_, existing)) => existing.extend(list),
            None => groups.push((act, list)),
        }
    }
    let allow = json!("allow");
    let mut filters = BTreeMap::new();
    // (name, whether it refuses seccomp(2) itself): each filter must let
    // the ones after it be installed, so one that refuses seccomp(2) goes
    // last, and there can be only one such.
    let mut order: Vec<(String, bool)> = Vec::new();
    let names_seccomp = |rules: &[Value]| rules.iter().any(|r| r["syscall"] == "seccomp");
    if default != allow {
        let every: Vec<Value> = groups.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
        order.push(("0-default".to_string(), !names_seccomp(&every)));
        filters.insert(
            "0-default",
            json!({ "mismatch_action": default, "match_action": allow, "filter": every }),
        );
    }
    let names: Vec<String> = (1..=groups.len()).map(|i| format!("{i}-rules")).collect();
    for ((act, list), name) in groups.iter().zip(&names) {
        if *act == allow || list.is_empty() {
            continue;
        }
        order.push((name.clone(), names_seccomp(list)));
        filters.insert(
            name.as_str(),
            json!({ "mismatch_action": allow, "match_action": act, "filter": list }),
        );
    }
    order.sort_by_key(|(_, refuses)| *refuses);
    if order.iter().filter(|(_, refuses)| *refuses).count() > 1 {
        return Err(SeccompError(
            "the profile refuses seccomp(2) in more than one way, so it cannot be installed".into(),
        ));
    }
    let mut compiled = seccompiler::compile_from_json(json!(filters).to_string().as_bytes(), arch)
        .map_err(|e| SeccompError(e.to_string()))?;
    let mut filters = order
        .iter()
        .map(|(name, _)| {
            compiled.remove(name).ok_or_else(|| SeccompError(format!("filter {name} missing")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Where calls are allowed unless a rule names them, x32 numbers would
    // escape the rules; an allow-list profile refuses them by default.
    if default == allow && arch == TargetArch::x86_64 && !profile_is_empty(&groups) {
        filters.insert(0, x32_refusal());
    }
    if let Some(f) = filters.iter().find(|f| f.len() > u16::MAX as usize) {
        return Err(SeccompError(format!("a filter of {} instructions is too long", f.len())));
    }
    let mut flags: libc::c_ulong = 0;
    for flag in profile.flags().as_deref().unwrap_or_default() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
        };
    }
    Ok(Program { filters, flags })
}

/// Whether a profile has no rule other than allow: nothing to escape.
fn profile_is_empty(groups: &[(Value, Vec<Value>)]) -> bool {
    groups.iter().all(|(act, rules)| *act == json!("allow") || rules.is_empty())
}

/// Installs the filters on the calling thread. Runs in the forked container
/// process: system calls only, no allocation. Needs no_new_privs or
/// CAP_SYS_ADMIN, as the kernel does.
pub(crate) fn install(program: &Program) -> Step {
    for filter in &program.filters {
        let prog = SockFprog { len: filter.len() as libc::c_ushort, filter: filter.as_ptr() };
        // SAFETY: the kernel copies the program from a live buffer whose
        // length `prog` gives; nothing is kept after the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                program.flags,
                &prog as *const SockFprog,
            )
        };
        if rc != 0 {
            return Err(format!("install seccomp filter: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(profile: &LinuxSeccomp) -> Vec<String> {
        profile.syscalls().iter().flatten().flat_map(|s| s.names().clone()).collect()
    }

    #[test]
    fn runtime_default_denies_escapes_unless_a_capability_allows_them() {
        let plain = runtime_default(&["CAP_CHOWN".into()]);
        let denied = names(&plain);
        for call in ["mount", "unshare", "keyctl", "ptrace", "bpf", "clone", "clone3", "reboot"] {
            assert!(denied.iter().any(|n| n == call), "{call} is not denied");
        }
        let admin = runtime_default(&["CAP_SYS_ADMIN".into()]);
        let denied = names(&admin);
        for call in ["mount", "unshare", "clone", "clone3"] {
            assert!(!denied.iter().any(|n| n == call), "{call} is denied with CAP_SYS_ADMIN");
        }
        assert!(denied.iter().any(|n| n == "keyctl"), "keys stay denied");
    }

    /// Runs a classic BPF seccomp program (the instructions `x32_refusal`
    /// uses) on a call `nr` of `arch`, as the kernel would.
    fn run_filter(program: &BpfProgram, nr: u32, arch: u32) -> u32 {
        let data = [nr, arch];
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = &program[pc];
            pc += 1;
            match i.code as u32 {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = data[i.k as usize / 4],
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                c if c == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K => {
                    pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf });
                }
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                other => panic!("instruction {other:#x} is not interpreted here"),
            }
        }
    }

    #[test]
    fn x32_calls_are_refused_where_rules_name_calls() {
        let program = compile(&runtime_default(&[])).unwrap();
        if std::env::consts::ARCH != "x86_64" {
            assert_eq!(program.filters.len(), 2);
            return;
        }
        let x32 = &program.filters[0];
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let mount = libc::SYS_mount as u32;
        assert_eq!(run_filter(x32, mount | X32_SYSCALL_BIT, AUDIT_ARCH_X86_64), enosys);
        assert_eq!(run_filter(x32, mount, AUDIT_ARCH_X86_64), libc::SECCOMP_RET_ALLOW);
        // i386 calls are another arch, left to the other filters.
        assert_eq!(run_filter(x32, 21 | X32_SYSCALL_BIT, 3 | 0x4000_0000), libc::SECCOMP_RET_ALLOW);
        // An allow-list profile refuses x32 numbers by its default already.
        let allow_list: LinuxSeccomp = serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]
        }))
        .unwrap();
        assert_eq!(compile(&allow_list).unwrap().filters.len(), 1);
    }

    #[test]
    fn profiles_compile_to_one_filter_per_action() {
        let default = compile(&runtime_default(&[])).unwrap();
        // EPERM rules and ENOSYS for clone3 (and, on x86_64, the x32
        // refusal); allow by default needs no filter.
        let x32 = usize::from(std::env::consts::ARCH == "x86_64");
        assert_eq!(default.filters.len(), 2 + x32);
        let allow_list: LinuxSeccomp = serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
                {"names": ["read", "write", "no_such_call", "arm_fadvise64_64"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                          {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"}
            ]
        }))
        .unwrap();
        let program = compile(&allow_list).unwrap();
        assert_eq!(program.filters.len(), 2, "the default's filter and the kill rule's");
        assert_eq!(program.flags, libc::SECCOMP_FILTER_FLAG_LOG);
        let notify: LinuxSeccomp = serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]
        }))
        .unwrap();
        assert!(compile(&notify).is_err());
        let bad_index: LinuxSeccomp = serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]
        }))
        .unwrap();
        assert!(compile(&bad_index).is_err());
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    /// Runs `calls` in a forked child under `profile` (with no_new_privs,
    /// which needs no privilege) and returns each call's errno (0: success).
    fn errnos_under(profile: &LinuxSeccomp, calls: &[fn() -> libc::c_long]) -> Vec<i32> {
        let program = compile(profile).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child makes system calls only and ends in _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                drop(r);
                // SAFETY: prctl with integer arguments only.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let mut out = [0i32; 8];
                if install(&program).is_err() {
                    // SAFETY: ends the forked child.
                    unsafe { libc::_exit(2) };
                }
                for (slot, call) in out.iter_mut().zip(calls) {
                    *slot = if call() == 0 {
                        0
                    } else {
                        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
                    };
                }
                // SAFETY: writes a stack buffer to our pipe, then ends the child.
                unsafe {
                    libc::write(std::os::fd::AsRawFd::as_raw_fd(&w), out.as_ptr().cast(), 32);
                    libc::_exit(0)
                }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(w);
                let mut buf = [0u8; 32];
                let mut file = std::fs::File::from(r);
                let got = std::io::Read::read(&mut file, &mut buf).unwrap_or(0);
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0), "child failed");
                assert_eq!(got, 32);
                buf.chunks(4)
                    .take(calls.len())
                    .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
        }
    }

    #[test]
    fn runtime_default_refuses_keys_namespaces_and_mounts() {
        let calls: [fn() -> libc::c_long; 6] = [
            // SAFETY (all): raw system calls with integer or null arguments.
            || unsafe {
                libc::syscall(libc::SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0)
            },
            || unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) },
            || unsafe {
                libc::syscall(
                    libc::SYS_mount,
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null::<u8>(),
                    libc::MS_REMOUNT,
                    0,
                )
            },
            || unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) },
            || unsafe {
                libc::syscall(libc::SYS_clone, libc::CLONE_NEWNET as libc::c_ulong, 0, 0, 0, 0)
            },
            || unsafe { libc::syscall(libc::SYS_getppid) }.min(0),
        ];
        let errnos = errnos_under(&runtime_default(&[]), &calls);
        assert_eq!(
            errnos,
            [libc::EPERM, libc::EPERM, libc::EPERM, libc::ENOSYS, libc::EPERM, 0],
            "keyctl, unshare, mount, clone3, clone(CLONE_NEWNET), getppid"
        );
    }

    #[test]
    fn an_allow_list_refuses_what_it_does_not_name() {
        let profile: LinuxSeccomp = serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": libc::EACCES,
            "syscalls": [
                {"names": ["write", "exit", "exit_group", "getppid"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["getuid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOTTY}
            ]
        }))
        .unwrap();
        let calls: [fn() -> libc::c_long; 3] = [
            // SAFETY (all): raw system calls without arguments.
            || unsafe { libc::syscall(libc::SYS_getppid) }.min(0),
            || unsafe { libc::syscall(libc::SYS_getuid) }.min(0),
            || unsafe { libc::syscall(libc::SYS_getgid) }.min(0),
        ];
        let errnos = errnos_under(&profile, &calls);
        assert_eq!(errnos, [0, libc::ENOTTY, libc::EACCES]);
    }
}
