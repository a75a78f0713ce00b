//! Device access on cgroup v2. There is no devices controller; instead the
//! kernel runs a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup
//! at every open and mknod of a device node. This file assembles that
//! program from the device rules (a handful of instructions, written here
//! directly, so no compiler or BPF library is needed at run time), loads it
//! with bpf(2) and attaches it, replacing the program a previous apply left.
//!
//! The program gives the rules v1's meaning: start from "deny all", a later
//! rule overrides an earlier one. It checks the rules last to first and the
//! first that matches decides; nothing matching means deny.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::DeviceRule;
use crate::executor::error::{ExecutorError, Result};

/// One eBPF instruction as the kernel reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

// Registers: R0 is the return value, R1 the context on entry.
const R0: u8 = 0;
const R1: u8 = 1;
/// Device type (BPF_DEVCG_DEV_*).
const R2: u8 = 2;
/// Requested access (BPF_DEVCG_ACC_*).
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

// Opcodes from linux/bpf_common.h and linux/bpf.h.
/// BPF_LDX | BPF_MEM | BPF_W (BPF_W is 0).
const LDX_MEM_W: u8 = 0x01 | 0x60;
const ALU32: u8 = 0x04;
const ALU64: u8 = 0x07;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const OP_AND: u8 = 0x50;
const OP_RSH: u8 = 0x70;
const OP_MOV: u8 = 0xb0;
const OP_JEQ: u8 = 0x10;
const OP_JNE: u8 = 0x50;
const OP_EXIT: u8 = 0x90;
/// Source operand is a register, not the immediate.
const SRC_X: u8 = 0x08;

// struct bpf_cgroup_dev_ctx: access_type (access << 16 | type), major, minor.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

fn load_ctx(dst: u8, off: i16) -> Insn {
    insn(LDX_MEM_W, dst, R1, off, 0)
}

fn alu32_imm(op: u8, dst: u8, imm: i32) -> Insn {
    insn(ALU32 | op, dst, 0, 0, imm)
}

fn mov32_reg(dst: u8, src: u8) -> Insn {
    insn(ALU32 | OP_MOV | SRC_X, dst, src, 0, 0)
}

fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(ALU64 | OP_MOV, dst, 0, 0, imm)
}

/// A 32-bit compare-and-jump to the end of the current rule's block; the
/// offset is filled in once the block's length is known.
fn skip_if(op: u8, dst: u8, imm: i32) -> (Insn, bool) {
    (insn(JMP32 | op, dst, 0, 0, imm), true)
}

fn skip_if_reg(op: u8, dst: u8, src: u8) -> (Insn, bool) {
    (insn(JMP32 | op | SRC_X, dst, src, 0, 0), true)
}

fn exit() -> Insn {
    insn(JMP | OP_EXIT, 0, 0, 0, 0)
}

/// Assembles the filter for `rules` (in v1 order: later rules win).
pub(crate) fn program(rules: &[DeviceRule]) -> Result<Vec<Insn>> {
    let mut out = vec![
        load_ctx(R2, CTX_ACCESS_TYPE),
        alu32_imm(OP_AND, R2, 0xffff),
        load_ctx(R3, CTX_ACCESS_TYPE),
        alu32_imm(OP_RSH, R3, 16),
        load_ctx(R4, CTX_MAJOR),
        load_ctx(R5, CTX_MINOR),
    ];
    for rule in rules.iter().rev() {
        let access = access_bits(rule)?;
        let mut block: Vec<(Insn, bool)> = Vec::new();
        match rule.kind {
            'a' => {}
            'b' => block.push(skip_if(OP_JNE, R2, DEV_BLOCK)),
            'c' => block.push(skip_if(OP_JNE, R2, DEV_CHAR)),
            other => return Err(bad_rule(rule, &format!("device type {other:?}"))),
        }
        if access != ACC_ALL {
            block.push((mov32_reg(R1, R3), false));
            block.push((alu32_imm(OP_AND, R1, access), false));
            if rule.allow {
                // Allow only when every requested kind of access is allowed.
                block.push(skip_if_reg(OP_JNE, R1, R3));
            } else {
                // Deny when any requested kind of access is denied.
                block.push(skip_if(OP_JEQ, R1, 0));
            }
        }
        for (reg, number) in [(R4, rule.major), (R5, rule.minor)] {
            if let Some(n) = device_number(rule, number)? {
                block.push(skip_if(OP_JNE, reg, n));
            }
        }
        let unconditional = block.is_empty();
        block.push((mov64_imm(R0, i32::from(rule.allow)), false));
        block.push((exit(), false));
        let len = block.len();
        out.extend(block.into_iter().enumerate().map(|(i, (mut ins, jumps))| {
            if jumps {
                ins.off = (len - i - 1) as i16;
            }
            ins
        }));
        if unconditional {
            // Earlier rules can never be reached; the verifier refuses dead code.
            return Ok(out);
        }
    }
    out.push(mov64_imm(R0, 0));
    out.push(exit());
    Ok(out)
}

fn access_bits(rule: &DeviceRule) -> Result<i32> {
    let mut bits = 0;
    for c in rule.access.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            other => return Err(bad_rule(rule, &format!("access {other:?}"))),
        };
    }
    if bits == 0 {
        return Err(bad_rule(rule, "empty access"));
    }
    Ok(bits)
}

/// None for a wildcard (absent or negative, as OCI writes -1).
fn device_number(rule: &DeviceRule, n: Option<i64>) -> Result<Option<i32>> {
    match n {
        None => Ok(None),
        Some(n) if n < 0 => Ok(None),
        // The context holds u32s; the 32-bit compare sees the same bits.
        Some(n) => u32::try_from(n)
            .map(|n| Some(n as i32))
            .map_err(|_| bad_rule(rule, &format!("device number {n}"))),
    }
}

fn bad_rule(rule: &DeviceRule, what: &str) -> ExecutorError {
    ExecutorError::Unsupported(format!("device rule {:?}: {what}", rule.v1_line()))
}

// bpf(2) commands and constants from linux/bpf.h.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> nix::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised repr(C) bpf_attr prefix of the
    // size passed; pointers inside it point at live buffers of their stated size.
    let ret = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as libc::c_uint)
    };
    if ret < 0 {
        Err(nix::Error::last())
    } else {
        Ok(ret)
    }
}

/// Loads the program; the verifier's log comes back in the error.
pub(crate) fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    let name = b"berth_devices";
    attr.prog_name[..name.len()].copy_from_slice(name);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(first) => {
            let mut log = vec![0u8; 64 << 10];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
                return Ok(owned(fd));
            }
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(ExecutorError::Sys {
                context: format!("load device filter (verifier: {})", text.trim()),
                source: first,
            })
        }
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: bpf(2) returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A descriptor of the loaded program with this id; ENOENT once it is gone.
pub(crate) fn prog_by_id(id: u32) -> nix::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr { id, ..Default::default() };
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(owned)
}

/// Ids of the device programs attached to the cgroup directory `cgroup`.
pub(crate) fn attached(cgroup: &OwnedFd) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr).map_err(ExecutorError::sys("query device filters"))?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Opens a cgroup directory for the bpf(2) calls that target it.
pub(crate) fn open_cgroup(dir: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(dir, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(ExecutorError::sys(format!("open cgroup {}", dir.display())))
}

/// Builds, loads and attaches the filter for `rules` to the cgroup at `dir`,
/// then detaches whatever filter was there before, so there is never a
/// moment without one. The attachment keeps the program alive; it goes
/// when the cgroup is removed.
pub(crate) fn apply(dir: &Path, rules: &[DeviceRule]) -> Result<()> {
    let insns = program(rules)?;
    let prog = load(&insns)?;
    let cgroup = open_cgroup(dir)?;
    let before = attached(&cgroup)?;
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(ExecutorError::sys(format!("attach device filter to {}", dir.display())))?;
    for id in before {
        let old = match prog_by_id(id) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) => continue,
            Err(e) => return Err(ExecutorError::sys("open old device filter")(e)),
        };
        let mut attr = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: old.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        match bpf(BPF_PROG_DETACH, &mut attr) {
            Ok(_) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(ExecutorError::sys("detach old device filter")(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        kind: char,
        major: Option<i64>,
        minor: Option<i64>,
        a: &str,
    ) -> DeviceRule {
        DeviceRule { allow, kind, major, minor, access: a.into() }
    }

    /// Runs the program on one request, as the kernel would: a small
    /// interpreter for exactly the instructions `program` emits.
    fn eval(prog: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                c if c == ALU32 | OP_AND => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                c if c == ALU32 | OP_RSH => r[dst] = (r[dst] as u32 >> i.imm) as u64,
                c if c == ALU32 | OP_MOV | SRC_X => r[dst] = r[src] as u32 as u64,
                c if c == ALU64 | OP_MOV => r[dst] = i.imm as i64 as u64,
                c if c == JMP | OP_EXIT => return r[0],
                c if c & 0x07 == JMP32 => {
                    let b = if c & SRC_X != 0 { r[src] as u32 } else { i.imm as u32 };
                    let taken = match c & 0xf0 {
                        OP_JEQ => r[dst] as u32 == b,
                        OP_JNE => r[dst] as u32 != b,
                        other => panic!("jump op {other:#x}"),
                    };
                    if taken {
                        pc += i.off as usize;
                    }
                }
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn later_rules_override_earlier_ones() {
        let rules = [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), None, "rw"),
            rule(false, 'c', Some(1), Some(5), "w"),
            rule(true, 'b', Some(8), Some(0), "r"),
        ];
        let p = program(&rules).unwrap();
        let rw = ACC_READ | ACC_WRITE;
        assert_eq!(eval(&p, DEV_CHAR, ACC_READ, 1, 3), 1);
        assert_eq!(eval(&p, DEV_CHAR, rw, 1, 3), 1);
        assert_eq!(eval(&p, DEV_CHAR, ACC_MKNOD, 1, 3), 0, "m was not allowed");
        assert_eq!(eval(&p, DEV_CHAR, ACC_READ, 1, 5), 1);
        assert_eq!(eval(&p, DEV_CHAR, rw, 1, 5), 0, "write to 1:5 is denied");
        assert_eq!(eval(&p, DEV_BLOCK, ACC_READ, 8, 0), 1);
        assert_eq!(eval(&p, DEV_BLOCK, rw, 8, 0), 0);
        assert_eq!(eval(&p, DEV_BLOCK, ACC_READ, 1, 3), 0, "type must match");
        assert_eq!(eval(&p, DEV_CHAR, ACC_READ, 4, 1), 0, "default deny");
    }

    #[test]
    fn allow_all_ends_the_program() {
        let rules = [rule(true, 'c', Some(1), Some(3), "rwm"), rule(true, 'a', None, None, "rwm")];
        let p = program(&rules).unwrap();
        // Prologue, then the unconditional allow; nothing after it.
        assert_eq!(p.len(), 8);
        assert_eq!(eval(&p, DEV_BLOCK, ACC_ALL, 259, 1), 1);
    }

    /// Where the cgroup2 hierarchy is mounted: /sys/fs/cgroup on a pure v2
    /// host, /sys/fs/cgroup/unified on a hybrid one.
    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        text.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(Into::into))?
        })
    }

    /// Kills and removes the test's cgroup, also when the test fails.
    struct CgroupGuard(super::super::CgroupV2);

    impl Drop for CgroupGuard {
        fn drop(&mut self) {
            use super::super::CgroupManager;
            let _ = self.0.kill_all();
            let _ = self.0.remove();
        }
    }

    fn wait_gone(id: u32) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(prog_by_id(id), Err(nix::Error::ENOENT)) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    /// Loads the filter into a real cgroup2 directory and opens devices from
    /// a process in it: what the rules deny fails with EPERM, what they
    /// allow opens; replacing and removing leave no program behind.
    #[test]
    fn filter_decides_device_opens_in_a_cgroup2_directory() {
        use super::super::{CgroupManager, CgroupV2, Resources};
        if !nix::unistd::geteuid().is_root() {
            println!("SKIPPED: needs root (bpf(2), cgroups)");
            return;
        }
        if !Path::new("/bin/busybox").exists() {
            println!("SKIPPED: needs /bin/busybox (Debian package busybox-static)");
            return;
        }
        let Some(mount) = cgroup2_mount() else {
            println!("SKIPPED: no cgroup2 hierarchy is mounted");
            return;
        };
        let rel = format!("berth-test-device-filter-{}", std::process::id());
        let guard = CgroupGuard(CgroupV2::new(&mount, Path::new(&rel)));
        let dir = mount.join(&rel);
        let resources = Resources {
            devices: vec![
                rule(false, 'a', None, None, "rwm"),
                rule(true, 'c', Some(1), Some(3), "rwm"), // /dev/null
                rule(true, 'c', Some(1), Some(5), "rwm"), // /dev/zero ...
                rule(false, 'c', Some(1), Some(5), "w"),  // ... read-only
            ],
            ..Default::default()
        };
        guard.0.apply(&resources).unwrap();
        let ids = attached(&open_cgroup(&dir).unwrap()).unwrap();
        assert_eq!(ids.len(), 1, "{ids:?}");

        // Regular commands, not `:`: a failed redirection of a special
        // builtin would end the shell.
        let script = r#"echo $$ > "$0/cgroup.procs" || exit 9
cat < /dev/null && echo null=ok
head -c 1 < /dev/zero > /dev/null && echo zero-read=ok
echo x > /dev/zero && echo zero-write=ok
head -c 1 < /dev/full > /dev/null && echo full=ok
exit 0"#;
        let out = std::process::Command::new("/bin/busybox")
            .args(["sh", "-c", script])
            .arg(&dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout} {stderr}");
        assert_eq!(stdout.lines().collect::<Vec<_>>(), ["null=ok", "zero-read=ok"], "{stderr}");
        assert_eq!(stderr.matches("Operation not permitted").count(), 2, "{stderr}");

        // A second apply swaps the program; the old one is released.
        let allow_all =
            Resources { devices: vec![rule(true, 'a', None, None, "rwm")], ..resources };
        guard.0.apply(&allow_all).unwrap();
        let now = attached(&open_cgroup(&dir).unwrap()).unwrap();
        assert_eq!(now.len(), 1, "{now:?}");
        assert_ne!(now, ids);
        assert!(wait_gone(ids[0]), "replaced program {} still loaded", ids[0]);

        drop(guard);
        assert!(!dir.exists(), "cgroup {} left", dir.display());
        assert!(wait_gone(now[0]), "program {} outlived its cgroup", now[0]);
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(program(&[rule(true, 'x', None, None, "r")]).is_err());
        assert!(program(&[rule(true, 'c', None, None, "rq")]).is_err());
        assert!(program(&[rule(true, 'c', None, None, "")]).is_err());
        assert!(program(&[rule(true, 'c', Some(1 << 33), None, "r")]).is_err());
    }
}
