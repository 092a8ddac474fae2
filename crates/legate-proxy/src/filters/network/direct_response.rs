//! `envoy.filters.network.direct_response`: writes a fixed response to each new connection
//! and closes it after the write. Terminal.

use std::sync::Arc;

use bytes::BytesMut;

use crate::network::{ConnectionCloseType, FilterStatus, ReadFilter, ReadFilterCallbacks};

pub struct DirectResponse {
    pub response: Arc<[u8]>,
}

impl ReadFilter for DirectResponse {
    fn on_new_connection(&mut self, cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        if !self.response.is_empty() {
            cb.write(BytesMut::from(&self.response[..]), false);
        }
        cb.close(ConnectionCloseType::FlushWrite);
        FilterStatus::StopIteration
    }

    fn on_data(&mut self, data: &mut BytesMut, _end_stream: bool, _cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        data.clear();
        FilterStatus::StopIteration
    }
}
