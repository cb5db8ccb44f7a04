//! `zendesk-lake simulate`: the simulated Zendesk account served on a port until interrupted,
//! changing by a round every few seconds when asked, for trying the product (or another tool)
//! against an account that moves.

use std::future::Future;
use std::io;
use std::time::Duration;

use crate::sim::{Round, SimConfig, SimServer, Simulator};

/// A simulated account being served.
pub struct Simulation {
    pub config: SimConfig,
    pub simulator: Simulator,
    pub server: SimServer,
}

impl Simulation {
    /// Serve `config`'s account on loopback at `port` (0: any free port).
    pub async fn start(config: SimConfig, port: u16) -> io::Result<Simulation> {
        let simulator = Simulator::new(config.clone());
        let server = simulator.serve(port).await?;
        Ok(Simulation {
            config,
            simulator,
            server,
        })
    }

    /// Serve until `stop` completes, applying [`Round::demo`] every `every` if given and
    /// telling `applied` the account's time (unix seconds) after each round.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()>,
        every: Option<Duration>,
        mut applied: impl FnMut(i64),
    ) {
        tokio::pin!(stop);
        match every {
            Some(every) => loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(every.max(Duration::from_secs(1))) => {
                        self.simulator.apply_round(&Round::demo());
                        applied(self.simulator.now());
                    }
                }
            },
            None => stop.await,
        }
        self.server.shutdown().await;
    }
}
