//! The binary's memory allocator: mimalloc, set up for a process that decodes millions of small
//! objects and reads long Delta logs (BENCHMARKS.md).

/// Decoding makes and frees millions of small objects (a parsed record's maps and strings):
/// under glibc's malloc they were a quarter of a backfill's CPU and its arenas held the
/// resident memory well above the heap (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed memory before it hands it back to the system. Its default of
/// 10 ms made a run that reads a long Delta log spend half its CPU zeroing pages it had just given
/// back and faulted in again (BENCHMARKS.md, after 100 runs). `MIMALLOC_PURGE_DELAY` in the
/// environment still decides over this.
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (include/mimalloc.h, the same number in
/// its v2 and v3), which the Rust bindings do not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Transparent huge pages off for this process, unless `MIMALLOC_ALLOW_THP` says otherwise
/// (mimalloc's own switch, read before `main`). With them, the first touch of any 2 MiB of
/// mimalloc's arenas had the kernel zero all of it: 40% of the CPU of an incremental run after
/// 100 others; without them, at 100k tickets, a backfill ran 8% faster and that run twice as
/// fast, in less memory (BENCHMARKS.md, "… no huge pages").
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: prctl with integer arguments only; on failure (an old kernel) the process
        // keeps the system's setting.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

/// Set the allocator's options for this process; call first thing in `main`.
pub fn configure() {
    // SAFETY: sets an option by its number in mimalloc's options table; mimalloc reads the
    // option at every purge, and keeps a value taken from the environment over this default.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    without_huge_pages();
}
