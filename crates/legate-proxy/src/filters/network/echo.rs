//! `envoy.filters.network.echo`: writes back every byte it reads. Terminal.

use bytes::BytesMut;

use crate::network::{FilterStatus, ReadFilter, ReadFilterCallbacks};

pub struct Echo;

impl ReadFilter for Echo {
    fn on_data(&mut self, data: &mut BytesMut, _end_stream: bool, cb: &mut ReadFilterCallbacks<'_>) -> FilterStatus {
        cb.write(data.split(), false);
        FilterStatus::StopIteration
    }
}
