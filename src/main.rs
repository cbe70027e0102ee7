use std::process::ExitCode;

use clap::Parser;

/// mimalloc's `mi_option_purge_delay`: 15 in mimalloc 2 and 3 alike (retired options keep their
/// numbers). `libmimalloc-sys` names it only with its `extended` feature's older table, which
/// needs another crate, so the two option calls are declared here.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
/// mimalloc 3's default purge delay, in milliseconds.
const MI_DEFAULT_PURGE_DELAY_MS: std::ffi::c_long = 1000;
/// Freed memory goes back to the system this long after it was freed. With mimalloc's default
/// second, a few MiB of freed buffers stayed resident at 256 connections, and a login's argon2
/// memory lingered (bench/NOTES.md).
const PURGE_DELAY_MS: std::ffi::c_long = 100;

extern "C" {
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Sets the purge delay, unless the option under that number does not hold mimalloc's default
/// for it (then the numbering changed, or the operator set `MIMALLOC_PURGE_DELAY`).
fn shorten_purge_delay() {
    // SAFETY: plain option calls, made once before any other thread exists.
    unsafe {
        if mi_option_get(MI_OPTION_PURGE_DELAY) == MI_DEFAULT_PURGE_DELAY_MS {
            mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

// Small, short-lived allocations (heads, header values, futures) dominate the proxy path.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// mimalloc, asked for plain blocks whenever they are aligned enough anyway. The `mimalloc`
/// crate's allocator asks for every block through `mi_malloc_aligned`: about 95 instructions a
/// call on the proxy path against about 55 for the plain one, and a slower generic path for
/// blocks over 1 KiB (bench/NOTES.md). Every mimalloc block is aligned to at least a word.
struct MiMalloc;

/// The alignment every mimalloc block has.
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: every block comes from mimalloc with at least the layout's alignment, and goes back
// to it through `mi_free`, which takes blocks of either path.
unsafe impl std::alloc::GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

fn main() -> ExitCode {
    // No transparent huge pages: mimalloc asks for them on its arenas, and one touched byte
    // then makes 2 MiB resident. At 256 connections that was about a fifth of the peak RSS
    // (bench/NOTES.md); what mimalloc itself does when told not to use them.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    shorten_purge_delay();
    let cli = match authgate::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage_error = e.use_stderr();
            let _ = e.print();
            return if usage_error {
                ExitCode::from(authgate::cli::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    authgate::cli::run(cli)
}
