//! The tls-reload actor's life: one interval timer that looks at the certificate files.

use actix::prelude::*;
use steward_core::{Resource, ResourceCtx, StopResource, stop_resource};

use super::TlsReload;

impl Actor for TlsReload {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // a restarted incarnation looks at once: the files may have changed while it was down
        let _ = self.resolver.reload();
        self.timer = Some(self.rcx.run_interval(ctx, self.interval, |act, _ctx| {
            // two small files read on the actor's thread; the resolver logs what it did
            let _ = act.resolver.reload();
        }));
    }
}

impl Resource for TlsReload {
    fn resource_ctx(&self) -> &ResourceCtx {
        &self.rcx
    }

    fn resource_ctx_mut(&mut self) -> &mut ResourceCtx {
        &mut self.rcx
    }
}

impl Handler<StopResource> for TlsReload {
    type Result = ();

    fn handle(&mut self, msg: StopResource, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        stop_resource(self, ctx, msg.reason);
    }
}
