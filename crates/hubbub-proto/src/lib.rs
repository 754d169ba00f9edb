//! The Azure Web PubSub wire contract as Hubbub speaks it, with no I/O.
//!
//! | module | its one job |
//! |---|---|
//! | [`connection_string`] | parse and emit `Endpoint=…;AccessKey=…;Version=1.0;` |
//! | [`jwt`] | HS256 JSON Web Tokens: sign, and verify against several keys in constant time |
//! | [`audience`] | compare a token's `aud` with the request it arrived on |
//! | [`error`] | the `ErrorDetail` body and `x-ms-error-code` header of every error response |
//! | [`keys`] | key slot names (`Primary`, `Secondary`, `Salt`) and the `WebPubSubKeys` shape |
//! | [`roles`] | `webpubsub.*` roles, REST permissions and wildcard group patterns |
//! | [`client_protocol`] | the JSON client subprotocols: parse requests, write responses |
//! | [`protobuf`] | the protobuf client subprotocols: the same, as Azure's published .proto |
//! | [`mqtt`] | MQTT 3.1.1 and 5.0 clients: framing, CONNECT rules, topics, the service's packets |

pub mod audience;
pub mod client_protocol;
pub mod connection_string;
pub mod error;
pub mod jwt;
pub mod keys;
pub mod mqtt;
pub mod protobuf;
pub mod roles;
