//! The deterministic answer the mock LLM gives, and its prompt-token count. Other crates' tests call these
//! functions to compute what must come out of the whole system; nothing here knows about HTTP or timing.

use crate::mock_directive::strip_mock_directives;
use crate::seeded_random::{GOLDEN_GAMMA, splitmix64};

/// Words the answers are made of. Sixty-four short, plain words read as vaguely poetic prose, which keeps test
/// failures readable; the count being a power of two is not required, just tidy.
const ANSWER_WORDS: [&str; 64] = [
    "the", "river", "carries", "a", "quiet", "stone", "past", "green", "hills", "where", "old", "lanterns",
    "glow", "and", "small", "birds", "sing", "about", "morning", "rain", "under", "bright", "clouds", "that",
    "drift", "slowly", "toward", "distant", "towers", "while", "gentle", "wind", "moves", "through", "tall",
    "grass", "near", "every", "open", "window", "of", "warm", "houses", "built", "from", "cedar", "clay",
    "silver", "paper", "maps", "show", "hidden", "roads", "beside", "deep", "lakes", "full", "fish", "gold",
    "leaves", "fall", "on", "soft", "sand",
];

/// Every eighth word ends a sentence, so long answers read as prose instead of one endless clause.
const WORDS_PER_SENTENCE: usize = 8;

/// The answer to `last_user_message`, as exactly `token_count` tokens: the first token has no leading space, every
/// other token is one space and one word. Mock directives (`[[mock ...]]`) are stripped and whitespace is normalised
/// before hashing, so passing the raw message a client sent gives the same answer the server streamed.
///
/// The answer for a smaller count is always a prefix of the answer for a larger one, so a `max_tokens` cut is a
/// prefix too. Neighbouring tokens never repeat, so a swapped or duplicated token is always detectable.
pub fn answer_tokens(last_user_message: &str, token_count: usize) -> Vec<String> {
    let prompt_seed = hash_prompt_words(&strip_mock_directives(last_user_message));
    let mut tokens = Vec::with_capacity(token_count);
    let mut previous_word_index = usize::MAX;
    for token_index in 0..token_count {
        let mixed = splitmix64(prompt_seed.wrapping_add((token_index as u64).wrapping_mul(GOLDEN_GAMMA)));
        let mut word_index = (mixed % ANSWER_WORDS.len() as u64) as usize;
        if word_index == previous_word_index {
            word_index = (word_index + 1) % ANSWER_WORDS.len();
        }
        previous_word_index = word_index;
        tokens.push(format_answer_token(ANSWER_WORDS[word_index], token_index));
    }
    tokens
}

/// Markup a client must show as text, never run or render: each fragment, if inserted as HTML, would run script or
/// load an image. The `markup` knob answers with these, cycled, one fragment per token.
pub const MARKUP_ANSWER_FRAGMENTS: [&str; 4] = [
    "<script>document.title='markup ran'</script>",
    " <img src=x onerror=\"document.title='markup ran'\">",
    " <b>not bold</b>",
    " &lt;escaped&gt;",
];

/// The `markup` knob's answer: [`MARKUP_ANSWER_FRAGMENTS`] cycled to `token_count` tokens.
pub fn markup_answer_tokens(token_count: usize) -> Vec<String> {
    MARKUP_ANSWER_FRAGMENTS.iter().cycle().take(token_count).map(|fragment| (*fragment).to_owned()).collect()
}

/// The whole answer as one string: the concatenation of [`answer_tokens`].
pub fn answer_text(last_user_message: &str, token_count: usize) -> String {
    answer_tokens(last_user_message, token_count).concat()
}

/// The prompt-token count reported in `usage`: whitespace-separated words across all message texts, after mock
/// directives are stripped. Real tokenizers differ; this only has to be simple and repeatable.
pub fn count_prompt_tokens<'text>(message_texts: impl IntoIterator<Item = &'text str>) -> u32 {
    let word_count: usize =
        message_texts.into_iter().map(|text| strip_mock_directives(text).split_whitespace().count()).sum();
    u32::try_from(word_count).unwrap_or(u32::MAX)
}

fn format_answer_token(word: &str, token_index: usize) -> String {
    let position_in_sentence = token_index % WORDS_PER_SENTENCE;
    let mut token = String::with_capacity(word.len() + 2);
    if token_index > 0 {
        token.push(' ');
    }
    if position_in_sentence == 0 {
        let mut characters = word.chars();
        if let Some(first) = characters.next() {
            token.extend(first.to_uppercase());
            token.push_str(characters.as_str());
        }
    } else {
        token.push_str(word);
    }
    if position_in_sentence == WORDS_PER_SENTENCE - 1 {
        token.push('.');
    }
    token
}

/// FNV-1a over the prompt's words joined by single spaces, so extra or different whitespace does not change the
/// answer.
fn hash_prompt_words(text: &str) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
    const FNV_PRIME: u64 = 0x0100_0000_01B3;
    let mut hash = FNV_OFFSET_BASIS;
    for (word_index, word) in text.split_whitespace().enumerate() {
        if word_index > 0 {
            hash = (hash ^ u64::from(b' ')).wrapping_mul(FNV_PRIME);
        }
        for byte in word.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_prompt_always_gets_the_same_answer() {
        let first = answer_tokens("Tell me about rivers", 40);
        let second = answer_tokens("Tell me about rivers", 40);
        assert_eq!(first, second);
        assert_eq!(first.len(), 40);
    }

    #[test]
    fn different_prompts_get_different_answers() {
        assert_ne!(answer_text("Tell me about rivers", 20), answer_text("Tell me about stones", 20));
    }

    #[test]
    fn only_the_first_token_lacks_a_leading_space() {
        let tokens = answer_tokens("hello", 30);
        assert!(!tokens[0].starts_with(' '));
        for token in &tokens[1..] {
            assert!(token.starts_with(' ') && token.len() > 1, "{token:?}");
            assert!(!token[1..].contains(' '), "{token:?}");
        }
    }

    #[test]
    fn neighbouring_tokens_never_repeat_so_order_errors_show() {
        for prompt in ["a", "b", "hello world", "", "Tell me a long story"] {
            let tokens = answer_tokens(prompt, 200);
            for pair in tokens.windows(2) {
                assert_ne!(pair[0].trim(), pair[1].trim(), "{prompt:?}");
            }
        }
    }

    #[test]
    fn a_shorter_answer_is_a_prefix_of_a_longer_one() {
        let long = answer_tokens("prefix check", 50);
        let short = answer_tokens("prefix check", 13);
        assert_eq!(short[..], long[..13]);
    }

    #[test]
    fn directives_and_whitespace_do_not_change_the_answer() {
        let plain = answer_text("Tell me a story", 10);
        assert_eq!(answer_text("Tell me a story [[mock tokens=10 ttft_ms=5]]", 10), plain);
        assert_eq!(answer_text("  Tell me\n a [[mock hang=false]] story ", 10), plain);
    }

    #[test]
    fn zero_tokens_is_an_empty_answer() {
        assert!(answer_tokens("anything", 0).is_empty());
        assert_eq!(answer_text("anything", 0), "");
    }

    #[test]
    fn sentences_start_with_a_capital_and_end_with_a_period() {
        let tokens = answer_tokens("prose", 16);
        assert!(tokens[0].chars().next().is_some_and(char::is_uppercase));
        assert!(tokens[7].ends_with('.'));
        assert!(tokens[8].chars().nth(1).is_some_and(char::is_uppercase));
    }

    #[test]
    fn prompt_tokens_count_words_across_messages_without_directives() {
        let count = count_prompt_tokens(["You are helpful.", "Hi there [[mock tokens=3]]"]);
        assert_eq!(count, 5);
    }
}
