use tachyon::websocket;

#[websocket("/ws/{id}")]
async fn no_socket(id: u64) -> tachyon::Result<()> {
    let _ = id;
    Ok(())
}

fn main() {}
