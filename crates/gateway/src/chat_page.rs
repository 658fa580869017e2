//! Serves the bundled browser chat page at `/`.

use axum::response::Html;

pub async fn chat_page() -> Html<&'static str> {
    Html(include_str!("../static/chat.html"))
}
