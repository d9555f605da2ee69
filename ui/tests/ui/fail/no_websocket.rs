use tachyon::websocket;

#[websocket("/ws/{id}")]
async fn no_socket(id: u64) -> tachyon::Result<()> {
    let _ = id;
    Ok(())
}

fn main() {
    // The function and its route are still there: no second error for using them.
    let _ = tachyon::Tachyon::new().websocket(no_socket);
    let _ = no_socket::PATH;
}
