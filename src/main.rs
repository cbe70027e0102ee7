use std::process::ExitCode;

use clap::Parser;

// Small, short-lived allocations (heads, header values, futures) dominate the proxy path.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

/// mimalloc, asked for plain blocks whenever they are aligned enough anyway. The `mimalloc`
/// crate's allocator asks for every block through `mi_malloc_aligned`, whose path costs about
/// five times the plain one, and more for blocks over 1 KiB (bench/NOTES.md); every mimalloc
/// block is aligned to at least a word.
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
