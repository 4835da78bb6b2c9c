//! Servers a test can stop answering and start again, whatever the store: for faults that
//! stall a whole deployment.

use crate::error::Result;

/// A server that can be stopped (it keeps its connections and answers nothing) and continued.
pub trait Pausable {
    /// Stops answering (SIGSTOP for a real server process).
    fn pause(&self) -> Result<()>;
    /// Answers again.
    fn resume(&self) -> Result<()>;
}

impl Pausable for crate::redis::Redis {
    fn pause(&self) -> Result<()> {
        crate::redis::Redis::pause(self)
    }
    fn resume(&self) -> Result<()> {
        crate::redis::Redis::resume(self)
    }
}

impl Pausable for crate::zk::ZooKeeper {
    fn pause(&self) -> Result<()> {
        crate::zk::ZooKeeper::pause(self)
    }
    fn resume(&self) -> Result<()> {
        crate::zk::ZooKeeper::resume(self)
    }
}

impl Pausable for crate::etcd::Etcd {
    fn pause(&self) -> Result<()> {
        crate::etcd::Etcd::pause(self)
    }
    fn resume(&self) -> Result<()> {
        crate::etcd::Etcd::resume(self)
    }
}

impl Pausable for crate::consul::ConsulServer {
    fn pause(&self) -> Result<()> {
        crate::consul::ConsulServer::pause(self);
        Ok(())
    }
    fn resume(&self) -> Result<()> {
        crate::consul::ConsulServer::resume(self);
        Ok(())
    }
}
