//! NVML (the NVIDIA Management Library, libnvidia-ml), loaded at run time
//! so that `berth` neither links against it nor needs it on machines
//! without a GPU. Only the calls the nvidia plugin makes are declared
//! here, from NVML's published C API: init, the device list (UUID, minor
//! number, name, memory) and Xid critical-error events.

use libloading::Library;
use std::ffi::{c_char, c_uint, c_ulonglong, c_void, CStr};
use std::fmt;
use std::path::Path;

/// The name the driver installs the library under, found through the
/// dynamic loader's path.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// `nvmlEventTypeXidCriticalError`: the event's data is the Xid number.
pub const XID_CRITICAL_ERROR: u64 = 0x8;

/// `nvmlReturn_t` values the plugin tells apart.
const SUCCESS: c_uint = 0;
pub const ERROR_NOT_SUPPORTED: c_uint = 3;
pub const ERROR_TIMEOUT: c_uint = 10;
pub const ERROR_GPU_IS_LOST: c_uint = 15;

/// Buffer sizes NVML documents as large enough for a UUID and a name.
const UUID_BUFFER: usize = 96;
const NAME_BUFFER: usize = 96;

type Return = c_uint;
type RawDevice = *mut c_void;
type RawEventSet = *mut c_void;

/// `nvmlMemory_t`, in bytes.
#[repr(C)]
#[derive(Default)]
struct Memory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}

/// `nvmlEventData_t`.
#[repr(C)]
struct RawEvent {
    device: RawDevice,
    event_type: c_ulonglong,
    event_data: c_ulonglong,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
}

/// The entry points, copied out of the library (valid while it is loaded).
struct Functions {
    init: unsafe extern "C" fn() -> Return,
    shutdown: unsafe extern "C" fn() -> Return,
    error_string: unsafe extern "C" fn(Return) -> *const c_char,
    count: unsafe extern "C" fn(*mut c_uint) -> Return,
    handle_by_index: unsafe extern "C" fn(c_uint, *mut RawDevice) -> Return,
    uuid: unsafe extern "C" fn(RawDevice, *mut c_char, c_uint) -> Return,
    minor: unsafe extern "C" fn(RawDevice, *mut c_uint) -> Return,
    name: unsafe extern "C" fn(RawDevice, *mut c_char, c_uint) -> Return,
    memory: unsafe extern "C" fn(RawDevice, *mut Memory) -> Return,
    event_set_create: unsafe extern "C" fn(*mut RawEventSet) -> Return,
    register_events: unsafe extern "C" fn(RawDevice, c_ulonglong, RawEventSet) -> Return,
    event_set_wait: unsafe extern "C" fn(RawEventSet, *mut RawEvent, c_uint) -> Return,
    event_set_free: unsafe extern "C" fn(RawEventSet) -> Return,
}

/// A failed NVML call: which, and NVML's code and words for it.
#[derive(Debug)]
pub struct NvmlError {
    pub call: &'static str,
    pub code: u32,
    pub message: String,
}

impl fmt::Display for NvmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (NVML error {})", self.call, self.message, self.code)
    }
}

impl std::error::Error for NvmlError {}

/// A device handle. NVML's handles stay valid until shutdown and NVML
/// may be called from any thread, so a handle may move between threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device(RawDevice);

// SAFETY: an NVML device handle is a process-wide identifier that NVML
// documents as usable from every thread; berth never dereferences it.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

/// One event from an event set.
#[derive(Debug)]
pub struct Event {
    /// The GPU it happened on (null when NVML cannot tell).
    pub device: Device,
    pub event_type: u64,
    /// For Xid critical errors, the Xid.
    pub data: u64,
}

/// The library, initialised; shut down and unloaded on drop.
pub struct Nvml {
    f: Functions,
    _library: Library,
}

/// Looks up `name` in `library` as a function of type `T`.
///
/// # Safety
/// `T` must be the C signature the library exports under that name.
unsafe fn function<T: Copy>(library: &Library, name: &str) -> Result<T, String> {
    library.get::<T>(name.as_bytes()).map(|s| *s).map_err(|e| format!("{name}: {e}"))
}

impl Nvml {
    /// Loads `library` (a path, or a bare name looked up by the dynamic
    /// loader) and initialises NVML.
    pub fn load(library: &Path) -> Result<Nvml, String> {
        // SAFETY: loading runs the library's initialisers; the library is
        // NVML (or a stand-in with its ABI), whose initialisers are sound.
        let lib = unsafe { Library::new(library.as_os_str()) }.map_err(|e| e.to_string())?;
        // SAFETY: each signature below is NVML's published one.
        let f = unsafe {
            Functions {
                init: function(&lib, "nvmlInit_v2")?,
                shutdown: function(&lib, "nvmlShutdown")?,
                error_string: function(&lib, "nvmlErrorString")?,
                count: function(&lib, "nvmlDeviceGetCount_v2")?,
                handle_by_index: function(&lib, "nvmlDeviceGetHandleByIndex_v2")?,
                uuid: function(&lib, "nvmlDeviceGetUUID")?,
                minor: function(&lib, "nvmlDeviceGetMinorNumber")?,
                name: function(&lib, "nvmlDeviceGetName")?,
                memory: function(&lib, "nvmlDeviceGetMemoryInfo")?,
                event_set_create: function(&lib, "nvmlEventSetCreate")?,
                register_events: function(&lib, "nvmlDeviceRegisterEvents")?,
                event_set_wait: function(&lib, "nvmlEventSetWait_v2")?,
                event_set_free: function(&lib, "nvmlEventSetFree")?,
            }
        };
        // SAFETY: no arguments.
        let code = unsafe { (f.init)() };
        if code != SUCCESS {
            // SAFETY: nvmlErrorString may be called before a successful init.
            let message = unsafe { message((f.error_string)(code)) };
            return Err(NvmlError { call: "nvmlInit_v2", code, message }.to_string());
        }
        Ok(Nvml { f, _library: lib })
    }

    fn check(&self, call: &'static str, code: Return) -> Result<(), NvmlError> {
        if code == SUCCESS {
            return Ok(());
        }
        // SAFETY: NVML returns a static string for every code.
        let message = unsafe { message((self.f.error_string)(code)) };
        Err(NvmlError { call, code, message })
    }

    pub fn device_count(&self) -> Result<u32, NvmlError> {
        let mut n: c_uint = 0;
        // SAFETY: n is a valid out pointer.
        self.check("nvmlDeviceGetCount_v2", unsafe { (self.f.count)(&mut n) })?;
        Ok(n)
    }

    pub fn device(&self, index: u32) -> Result<Device, NvmlError> {
        let mut d: RawDevice = std::ptr::null_mut();
        // SAFETY: d is a valid out pointer.
        self.check("nvmlDeviceGetHandleByIndex_v2", unsafe {
            (self.f.handle_by_index)(index, &mut d)
        })?;
        Ok(Device(d))
    }

    pub fn uuid(&self, d: Device) -> Result<String, NvmlError> {
        let mut buf = [0 as c_char; UUID_BUFFER];
        // SAFETY: buf holds UUID_BUFFER bytes, the length passed.
        let code = unsafe { (self.f.uuid)(d.0, buf.as_mut_ptr(), UUID_BUFFER as c_uint) };
        self.check("nvmlDeviceGetUUID", code)?;
        Ok(text(&buf))
    }

    pub fn name(&self, d: Device) -> Result<String, NvmlError> {
        let mut buf = [0 as c_char; NAME_BUFFER];
        // SAFETY: buf holds NAME_BUFFER bytes, the length passed.
        let code = unsafe { (self.f.name)(d.0, buf.as_mut_ptr(), NAME_BUFFER as c_uint) };
        self.check("nvmlDeviceGetName", code)?;
        Ok(text(&buf))
    }

    /// The N of the GPU's /dev/nvidiaN.
    pub fn minor(&self, d: Device) -> Result<u32, NvmlError> {
        let mut n: c_uint = 0;
        // SAFETY: n is a valid out pointer.
        self.check("nvmlDeviceGetMinorNumber", unsafe { (self.f.minor)(d.0, &mut n) })?;
        Ok(n)
    }

    /// The GPU's total memory in bytes.
    pub fn memory_total(&self, d: Device) -> Result<u64, NvmlError> {
        let mut m = Memory::default();
        // SAFETY: m is a valid nvmlMemory_t.
        self.check("nvmlDeviceGetMemoryInfo", unsafe { (self.f.memory)(d.0, &mut m) })?;
        Ok(m.total)
    }

    pub fn event_set(&self) -> Result<EventSet<'_>, NvmlError> {
        let mut set: RawEventSet = std::ptr::null_mut();
        // SAFETY: set is a valid out pointer.
        self.check("nvmlEventSetCreate", unsafe { (self.f.event_set_create)(&mut set) })?;
        Ok(EventSet { nvml: self, raw: set })
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: NVML was initialised by load; every EventSet borrows
        // self, so none outlives this.
        let code = unsafe { (self.f.shutdown)() };
        if code != SUCCESS {
            tracing::warn!(code, "nvmlShutdown failed");
        }
    }
}

/// An event set; freed on drop.
pub struct EventSet<'a> {
    nvml: &'a Nvml,
    raw: RawEventSet,
}

impl EventSet<'_> {
    /// Adds `events` (a mask of event types) on `d` to the set.
    pub fn register(&self, d: Device, events: u64) -> Result<(), NvmlError> {
        // SAFETY: d and the set came from this NVML.
        let code = unsafe { (self.nvml.f.register_events)(d.0, events, self.raw) };
        self.nvml.check("nvmlDeviceRegisterEvents", code)
    }

    /// The next event, waiting at most `timeout_ms` (then an error with
    /// code [`ERROR_TIMEOUT`]).
    pub fn wait(&self, timeout_ms: u32) -> Result<Event, NvmlError> {
        let mut raw = RawEvent {
            device: std::ptr::null_mut(),
            event_type: 0,
            event_data: 0,
            gpu_instance_id: 0,
            compute_instance_id: 0,
        };
        // SAFETY: raw is a valid nvmlEventData_t and the set is alive.
        let code = unsafe { (self.nvml.f.event_set_wait)(self.raw, &mut raw, timeout_ms) };
        self.nvml.check("nvmlEventSetWait_v2", code)?;
        Ok(Event { device: Device(raw.device), event_type: raw.event_type, data: raw.event_data })
    }
}

impl Drop for EventSet<'_> {
    fn drop(&mut self) {
        // SAFETY: the set came from nvmlEventSetCreate and is freed once.
        unsafe { (self.nvml.f.event_set_free)(self.raw) };
    }
}

/// A NUL-terminated string NVML wrote into `buf` (all of it if none).
fn text(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// # Safety
/// `p` is null or points to a NUL-terminated string.
unsafe fn message(p: *const c_char) -> String {
    if p.is_null() {
        return "unknown error".into();
    }
    CStr::from_ptr(p).to_string_lossy().into_owned()
}
