//! SIGTERM and SIGINT: finish what is in flight, start nothing new, say so, exit 143 / 130.
//!
//! The first signal sets a flag that the engine's runner and a pass read before starting
//! each item, task and session: items in flight finish and commit their files (or drop
//! their temporaries), the run report and the history record the run as interrupted, and
//! the process exits with the shell's convention, 128 + the signal's number. A second
//! signal of the same kind ends the process at once, as the user then expects; nothing is
//! lost by it either, since every write is atomic and the next run sweeps the temporaries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The signals we catch, with their numbers.
const SIGNALS: [(i32, &str); 2] = [
    (signal_hook::consts::SIGINT, "SIGINT"),
    (signal_hook::consts::SIGTERM, "SIGTERM"),
];

/// The installed handlers' view: whether a signal came, and which.
#[derive(Clone)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl Interrupt {
    /// Installs the handlers for SIGINT and SIGTERM. A failure to install leaves the
    /// default behaviour (exit at once), which loses nothing either.
    pub fn install() -> Interrupt {
        let interrupt = Interrupt {
            flag: Arc::new(AtomicBool::new(false)),
            signal: Arc::new(AtomicUsize::new(0)),
        };
        for (number, name) in SIGNALS {
            // The order matters: the conditional default must see the flag still unset on
            // the first signal, so it is registered before the handler that sets it.
            let installed =
                signal_hook::flag::register_conditional_default(number, interrupt.flag.clone())
                    .and_then(|_| {
                        signal_hook::flag::register_usize(
                            number,
                            interrupt.signal.clone(),
                            number as usize,
                        )
                    })
                    .and_then(|_| signal_hook::flag::register(number, interrupt.flag.clone()));
            if let Err(e) = installed {
                tracing::warn!("cannot catch {name}: {e}");
            }
        }
        interrupt
    }

    /// The flag the runner watches.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The signal that came, by name, if any.
    pub fn signal_name(&self) -> Option<&'static str> {
        let number = self.signal.load(Ordering::SeqCst) as i32;
        SIGNALS
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, name)| *name)
    }

    /// 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), the shell's convention.
    pub fn exit_code(&self) -> Option<u8> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            n => Some((128 + n).min(255) as u8),
        }
    }
}
