use std::time::Duration;

use tachyon::{websocket, Tachyon, WebSocket};

const MIB: usize = 1024 * 1024;

#[websocket(
    "/upload",
    max_message_size = 16 * MIB,
    max_frame_size = MIB,
    read_buffer_size = 8192,
    write_buffer_size = 16_384,
    max_write_buffer_size = 4 * MIB,
    queue_messages = 64,
    queue_bytes = 4 * MIB,
    close_timeout = Duration::from_secs(1),
    keepalive_interval = Duration::from_secs(5),
    keepalive_timeout = Duration::from_secs(5),
    idle_timeout = None,
)]
async fn upload(mut ws: WebSocket) -> tachyon::Result<()> {
    ws.accept().await
}

fn main() {
    let _app = Tachyon::new().websocket(upload);
}
