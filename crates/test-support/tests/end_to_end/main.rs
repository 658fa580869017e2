//! Cross-service flows in one process: several gateways and workers sharing one Redis, as they would when
//! scaled out behind nginx.

mod many_chats;
