//! The frames of the platform's control protocol ([`dc_tee::sim::control`]) over an async
//! stream: a `u32` little-endian length, then the message. The agent's broker client
//! ([`crate::launcher::BrokerLauncher`]) and the host-side launch broker ([`crate::broker`])
//! both speak it over loopback TCP.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub async fn write_frame(w: &mut (impl AsyncWrite + Unpin), body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    w.write_all(&[&len.to_le_bytes()[..], body].concat())
        .await?;
    w.flush().await
}

/// `Ok(None)` on a clean end of stream.
pub async fn read_frame(
    r: &mut (impl AsyncRead + Unpin),
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len}-byte frame over the {max}-byte limit"),
        ));
    }
    let mut b = vec![0u8; len];
    r.read_exact(&mut b).await?;
    Ok(Some(b))
}
