//! The chat example's page (`examples/chat.html`) driven through WebDriver: a person joins,
//! types, and the test reads what the page shows.

use fantoccini::{Client, Locator};

use super::webdriver::wait_for;
use super::within;

async fn fill(client: &Client, id: &str, text: &str) {
    let field = client.find(Locator::Id(id)).await.expect(id);
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .expect(id)
        .click()
        .await
        .expect("click");
}

/// One person: opens the page, joins `room` as `name`, and sees themselves in the member list.
pub async fn join(client: &Client, url: &str, name: &str, room: &str) {
    client.goto(url).await.expect("the page");
    fill(client, "name", name).await;
    fill(client, "room", room).await;
    click(client, "join").await;
    let me = format!("//ul[@id='members']/li[text()='{name} (you)']");
    wait_for(client, &format!("{name} in the member list"), &me).await;
}

pub async fn say(client: &Client, text: &str) {
    fill(client, "text", text).await;
    click(client, "send").await;
}

/// The XPath of a chat message from `name` saying `text`.
pub fn message(name: &str, text: &str) -> String {
    format!(
        "//li[contains(@class,'message')][span[@class='who' and text()='{name}']]\
         [div[@class='text' and text()='{text}']]"
    )
}

/// The XPath of a notice saying `text`.
pub fn notice(text: &str) -> String {
    format!("//li[@class='notice' and text()='{text}']")
}

/// The XPath of a notice that starts with `text`.
pub fn notice_starting(text: &str) -> String {
    format!("//li[@class='notice' and starts-with(text(),'{text}')]")
}

/// Every chat message the page shows, in order, as `name: text`.
pub async fn shown_messages(client: &Client) -> Vec<String> {
    let script = "return [...document.querySelectorAll('#messages li.message')].map((item) => \
                  `${item.querySelector('.who').textContent}: \
                  ${item.querySelector('.text').textContent}`);";
    let shown = within("the page's messages", client.execute(script, Vec::new()))
        .await
        .expect("the script runs");
    serde_json::from_value(shown).expect("a list of strings")
}

/// Every notice the page shows, in order.
pub async fn shown_notices(client: &Client) -> Vec<String> {
    let script = "return [...document.querySelectorAll('#messages li.notice')]\
                  .map((item) => item.textContent);";
    let shown = within("the page's notices", client.execute(script, Vec::new()))
        .await
        .expect("the script runs");
    serde_json::from_value(shown).expect("a list of strings")
}
