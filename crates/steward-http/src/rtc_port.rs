//! WebRTC signaling on a socket (`GET /v1/rtc`): the [`RtcPort`] a signaling socket gets, over
//! its `steward-rtc` peer, and the [`Signaling`] the peer gets, over the socket's bounded queue
//! and its close. Dropping the port (the socket is gone) closes the peer `signaling_lost`.

use std::sync::Arc;

use actix::Recipient;
use bytestring::ByteString;
use steward_rtc::{PeerLink, Signaling};
use steward_socket::jobs::Offer;
use steward_socket::port::{CloseSocket, FrameSink, PortError, RtcPort};

/// The peer behind one signaling socket.
pub(crate) struct PeerPort {
    link: PeerLink,
}

impl PeerPort {
    pub(crate) fn new(link: PeerLink) -> Self {
        Self { link }
    }
}

impl RtcPort for PeerPort {
    fn attach(&self, sink: Arc<dyn FrameSink>, close: Recipient<CloseSocket>) {
        self.link.attach(Arc::new(SocketSignaling { sink, close }));
    }

    fn signal(&self, text: ByteString) -> Result<(), PortError> {
        self.link
            .signal(text)
            .map_err(|e| PortError { code: "rate_limited", message: e.to_string() })
    }
}

/// A signaling socket as its peer sees it.
struct SocketSignaling {
    sink: Arc<dyn FrameSink>,
    close: Recipient<CloseSocket>,
}

impl Signaling for SocketSignaling {
    fn send(&self, frame: ByteString) -> bool {
        matches!(self.sink.offer_frame(frame), Offer::Queued)
    }

    fn close(&self) {
        #[allow(clippy::disallowed_methods)]
        // once, as the peer ends: the socket must close even with a full mailbox
        self.close.do_send(CloseSocket);
    }
}
