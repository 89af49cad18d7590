//! Call order for a store's operations: each operation takes a ticket when it is called and
//! starts once every earlier one has finished or was dropped, whatever order the futures are
//! polled in. One operation of a stream is in flight at a time (a script is one round trip).
//!
//! [`eager`] polls an operation once when it is called, so an operation whose turn it is sends
//! its command before the store method returns (the contract of `engine/mod.rs`).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt as _;
use futures_util::future::LocalBoxFuture;
use tokio::sync::Notify;

/// Hands out tickets in call order and serves them in that order.
#[derive(Debug, Default)]
pub(super) struct Sequencer {
    state: RefCell<State>,
    turn: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The next ticket handed out.
    next: u64,
    /// The ticket being served: every lower one has finished.
    serving: u64,
    /// Tickets above `serving` that finished (dropped before their turn).
    done: BTreeSet<u64>,
}

/// One operation's place in line; its turn ends when it drops.
#[derive(Debug)]
pub(super) struct Ticket {
    sequencer: Rc<Sequencer>,
    number: u64,
}

impl Sequencer {
    /// The next place in line.
    pub(super) fn ticket(self: &Rc<Self>) -> Ticket {
        let mut state = self.state.borrow_mut();
        let number = state.next;
        state.next += 1;
        Ticket { sequencer: self.clone(), number }
    }
}

impl Ticket {
    /// Waits until every earlier ticket has finished.
    ///
    /// # Cancel safety
    /// Cancel safe: the place in line is the ticket's, not the future's.
    pub(super) async fn turn(&self) {
        loop {
            // registered before the check: a turn that ends in between still wakes it
            let notified = self.sequencer.turn.notified();
            if self.sequencer.state.borrow().serving == self.number {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.sequencer.state.borrow_mut();
        state.done.insert(self.number);
        let mut advanced = false;
        loop {
            let serving = state.serving;
            if !state.done.remove(&serving) {
                break;
            }
            state.serving += 1;
            advanced = true;
        }
        drop(state);
        if advanced {
            self.sequencer.turn.notify_waiters();
        }
    }
}

/// Boxes `future` after polling it once, so it starts at once (inside a Tokio runtime only:
/// its timers need one).
pub(super) fn eager<T: 'static>(
    future: impl Future<Output = T> + 'static,
) -> LocalBoxFuture<'static, T> {
    let mut future = future.boxed_local();
    if tokio::runtime::Handle::try_current().is_err() {
        return future;
    }
    // a poll without waker: the caller's first poll registers the real one
    match Pin::new(&mut future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => std::future::ready(value).boxed_local(),
        Poll::Pending => future,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[actix_rt::test]
    async fn operations_run_in_call_order_whatever_the_poll_order() {
        let sequencer = Rc::new(Sequencer::default());
        let log = Rc::new(RefCell::new(Vec::new()));
        let op = |n: u32| {
            let ticket = sequencer.ticket();
            let log = log.clone();
            async move {
                ticket.turn().await;
                tokio::task::yield_now().await;
                log.borrow_mut().push(n);
            }
        };
        let (a, b, c) = (op(1), op(2), op(3));
        // dropped before its turn: it gives its place up
        let dropped = op(4);
        let d = op(5);
        drop(dropped);
        futures_util::future::join4(d, c, b, a).await;
        assert_eq!(*log.borrow(), vec![1, 2, 3, 5]);
    }

    #[actix_rt::test]
    async fn an_eager_operation_starts_before_it_is_awaited() {
        let started = Rc::new(Cell::new(false));
        let flag = started.clone();
        let future = eager(async move {
            flag.set(true);
            tokio::task::yield_now().await;
            7
        });
        assert!(started.get(), "the first poll happened at the call");
        assert_eq!(future.await, 7);
    }
}
