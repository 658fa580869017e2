//! Group commit of one answer's text: the first piece is written the moment it arrives, and pieces that arrive
//! while a write is in flight wait for it and go out together in the next write. An idle system writes every
//! piece at once; a loaded one (slow Redis round trips, a busy CPU) batches more by itself. No timer holds text
//! back. The batch waiting behind a write is bounded: once it holds `max_pieces`, the job stops reading the
//! upstream until the write returns. Pure bookkeeping: the job runner does the writing.

#[derive(Debug)]
pub struct GroupCommit {
    max_pieces: usize,
    pending: String,
    pending_pieces: usize,
    write_in_flight: bool,
}

impl GroupCommit {
    /// `max_pieces` bounds the text waiting behind a write in flight (at least 1).
    pub fn new(max_pieces: usize) -> Self {
        Self {
            max_pieces: max_pieces.max(1),
            pending: String::new(),
            pending_pieces: 0,
            write_in_flight: false,
        }
    }

    /// Takes one piece of text. Returns the batch to write now when no write is in flight; otherwise the piece
    /// waits for the next write.
    pub fn push(&mut self, piece: &str) -> Option<String> {
        self.pending.push_str(piece);
        self.pending_pieces += 1;
        if self.write_in_flight { None } else { self.start_write() }
    }

    /// The write in flight returned. Returns the next batch (what arrived meanwhile), if there is one.
    pub fn write_returned(&mut self) -> Option<String> {
        self.write_in_flight = false;
        self.start_write()
    }

    /// Whether the job may read more of the upstream now: false while a full batch waits behind a write.
    pub fn accepts_more(&self) -> bool {
        !self.write_in_flight || self.pending_pieces < self.max_pieces
    }

    pub fn write_in_flight(&self) -> bool {
        self.write_in_flight
    }

    /// The text no write took yet, for the job's final write (which goes out once no write is in flight).
    pub fn take_rest(&mut self) -> Option<String> {
        self.pending_pieces = 0;
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }

    fn start_write(&mut self) -> Option<String> {
        let batch = self.take_rest()?;
        self.write_in_flight = true;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_piece_is_written_at_once() {
        let mut commit = GroupCommit::new(32);
        assert_eq!(commit.push("Hello").as_deref(), Some("Hello"));
        assert!(commit.write_in_flight());
    }

    #[test]
    fn pieces_arriving_during_a_write_go_out_together_in_order_when_it_returns() {
        let mut commit = GroupCommit::new(32);
        assert_eq!(commit.push("a").as_deref(), Some("a"));
        assert_eq!(commit.push("b"), None);
        assert_eq!(commit.push("c"), None);
        assert_eq!(commit.write_returned().as_deref(), Some("bc"));
        assert!(commit.write_in_flight(), "the second batch is in flight now");
        assert_eq!(commit.write_returned(), None, "nothing waits: no write is started");
        assert!(!commit.write_in_flight());
        assert_eq!(commit.push("d").as_deref(), Some("d"), "idle again: the next piece goes at once");
    }

    #[test]
    fn an_idle_writer_writes_every_piece_on_its_own() {
        let mut commit = GroupCommit::new(32);
        for piece in ["one", "two", "three"] {
            assert_eq!(commit.push(piece).as_deref(), Some(piece));
            assert_eq!(commit.write_returned(), None);
        }
    }

    #[test]
    fn the_batch_behind_a_write_is_bounded_and_reading_resumes_when_the_write_returns() {
        let mut commit = GroupCommit::new(3);
        assert!(commit.accepts_more());
        commit.push("first");
        assert!(commit.accepts_more());
        for piece in ["1", "2", "3"] {
            assert!(commit.accepts_more(), "room until the bound");
            assert_eq!(commit.push(piece), None);
        }
        assert!(!commit.accepts_more(), "full: stop reading the upstream");
        assert_eq!(commit.write_returned().as_deref(), Some("123"));
        assert!(commit.accepts_more());
    }

    #[test]
    fn the_rest_is_whatever_no_write_took() {
        let mut commit = GroupCommit::new(32);
        commit.push("a");
        commit.push("b");
        assert_eq!(commit.take_rest().as_deref(), Some("b"));
        assert_eq!(commit.take_rest(), None);
    }
}
