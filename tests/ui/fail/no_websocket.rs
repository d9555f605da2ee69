use tachyon::websocket;

#[websocket("/ws/{id}")]
async fn no_socket(id: u64) -> tachyon::Result<()> {
    let _ = id;
    Ok(())
}

fn main() {
    // The function is still there: no second error for using it.
    let _ = no_socket;
}
