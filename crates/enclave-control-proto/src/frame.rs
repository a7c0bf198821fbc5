//! The framing after the upgrade: each message is a 4-byte big-endian length, then that many
//! bytes of one JSON object. Both directions, no other bytes.
//!
//! A receiver refuses a frame longer than its limit before reading it ([`Error::TooLarge`]);
//! the limit is the receiver's choice ([`MAX_FRAME`] at most).

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The largest frame either side ever accepts: 32 MiB (a view of a very large network).
pub const MAX_FRAME: usize = 32 * 1024 * 1024;

/// Errors of the framing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing failed.
    #[error("the connection failed")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame above the limit.
    #[error("a frame of {len} bytes is above the limit of {limit} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The connection ended inside a frame.
    #[error("the connection ended in the middle of a message")]
    Truncated,
    /// A frame that is not a message of this protocol.
    #[error("a message is not valid JSON of this protocol")]
    Json(#[source] serde_json::Error),
}

/// The result type of the framing.
pub type Result<T> = std::result::Result<T, Error>;

/// Reads frames.
#[derive(Debug)]
pub struct FrameReader<R> {
    io: R,
    limit: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from `io`, refusing frames above `limit` bytes (at most [`MAX_FRAME`]).
    pub fn new(io: R, limit: usize) -> Self {
        Self {
            io,
            limit: limit.min(MAX_FRAME),
        }
    }

    /// Changes the limit (a server accepts larger messages once the agent is authenticated).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(MAX_FRAME);
    }

    /// The next frame's bytes; `None` when the connection ended cleanly between frames.
    ///
    /// # Errors
    /// I/O, a frame above the limit, or an end inside a frame.
    pub async fn read_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < header.len() {
            let n = self.io.read(&mut header[got..]).await?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(Error::Truncated)
                };
            }
            got += n;
        }
        let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
        if len > self.limit {
            return Err(Error::TooLarge {
                len,
                limit: self.limit,
            });
        }
        let mut body = vec![0u8; len];
        self.io.read_exact(&mut body).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Truncated
            } else {
                Error::Io(e)
            }
        })?;
        Ok(Some(body))
    }

    /// The next message; `None` when the connection ended cleanly between frames.
    ///
    /// # Errors
    /// As [`Self::read_frame`], or a frame that is not a `T`.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.read_frame().await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(Error::Json),
            None => Ok(None),
        }
    }
}

/// Writes frames.
#[derive(Debug)]
pub struct FrameWriter<W> {
    io: W,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Writes to `io`.
    pub fn new(io: W) -> Self {
        Self { io }
    }

    /// Writes one frame of `bytes` (already JSON) and flushes.
    ///
    /// # Errors
    /// I/O, or `bytes` above [`MAX_FRAME`].
    pub async fn write_frame(&mut self, bytes: &[u8]) -> Result<()> {
        let too_large = || Error::TooLarge {
            len: bytes.len(),
            limit: MAX_FRAME,
        };
        if bytes.len() > MAX_FRAME {
            return Err(too_large());
        }
        let len = u32::try_from(bytes.len()).map_err(|_| too_large())?;
        self.io.write_all(&len.to_be_bytes()).await?;
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Writes one message.
    ///
    /// # Errors
    /// As [`Self::write_frame`].
    pub async fn write<T: Serialize>(&mut self, message: &T) -> Result<()> {
        let bytes = encode(message)?;
        self.write_frame(&bytes).await
    }

    /// Closes the writing direction (TLS `close_notify`, TCP FIN).
    ///
    /// # Errors
    /// I/O.
    pub async fn shutdown(&mut self) -> Result<()> {
        self.io.shutdown().await?;
        Ok(())
    }
}

/// A message's JSON, to write once and send to many.
///
/// # Errors
/// The message cannot be serialised (a map with non-string keys, say).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(message).map_err(Error::Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Ack, AgentMessage};

    #[tokio::test]
    async fn messages_round_trip_and_the_stream_ends_cleanly() {
        let (a, b) = tokio::io::duplex(1024);
        let mut writer = FrameWriter::new(a);
        let mut reader = FrameReader::new(b, 1024);
        writer
            .write(&AgentMessage::Ack(Ack { serial: 3 }))
            .await
            .unwrap();
        writer.write(&AgentMessage::Keepalive).await.unwrap();
        drop(writer);
        let first: Option<AgentMessage> = reader.read().await.unwrap();
        assert_eq!(first, Some(AgentMessage::Ack(Ack { serial: 3 })));
        let second: Option<AgentMessage> = reader.read().await.unwrap();
        assert_eq!(second, Some(AgentMessage::Keepalive));
        let end: Option<AgentMessage> = reader.read().await.unwrap();
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn a_frame_above_the_limit_is_refused_before_it_is_read() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(b, 100);
        a.write_all(&101u32.to_be_bytes()).await.unwrap();
        match reader.read_frame().await {
            Err(Error::TooLarge {
                len: 101,
                limit: 100,
            }) => {}
            other => panic!("{other:?}"),
        }
        let (mut a, b) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(b, usize::MAX);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            reader.read_frame().await,
            Err(Error::TooLarge {
                limit: MAX_FRAME,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn an_end_inside_a_frame_or_bad_json_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(b, 100);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{\"ty").await.unwrap();
        drop(a);
        assert!(matches!(reader.read_frame().await, Err(Error::Truncated)));

        let (mut a, b) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(b, 100);
        a.write_all(&2u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{}").await.unwrap();
        assert!(matches!(
            reader.read::<AgentMessage>().await,
            Err(Error::Json(_))
        ));
    }
}
