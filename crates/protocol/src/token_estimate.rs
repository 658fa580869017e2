//! How many tokens a prompt will cost, estimated without a tokenizer: what admission reserves from a caller's
//! daily budget, and what a worker charges when the provider reports no usage. Counting only, no Redis.

use crate::job::ChatMessage;

/// ASCII characters per token. OpenAI's rule of thumb for English text ("one token is roughly 4 characters",
/// in its help article "What are tokens and how to count them?"); BPE tokenizers merge common ASCII words.
const ASCII_CHARACTERS_PER_TOKEN: u64 = 4;

/// The prompt tokens of `messages`, counted so that no language is under-reserved: ASCII text at about four
/// characters a token, every other character as a whole token. The second rule comes from how the GPT
/// tokenizers (cl100k, o200k) split non-Latin scripts: a Chinese, Japanese or Korean character is one token or
/// more, and accented or Cyrillic letters seldom merge as far as English does. So Chinese text, which
/// characters ÷ 4 would count at a quarter of its cost, is counted at about its cost.
pub fn estimated_prompt_tokens(messages: &[ChatMessage]) -> u64 {
    let (ascii, other) = messages.iter().flat_map(|message| message.content.chars()).fold(
        (0_u64, 0_u64),
        |(ascii, other), character| {
            if character.is_ascii() { (ascii + 1, other) } else { (ascii, other + 1) }
        },
    );
    ascii.div_ceil(ASCII_CHARACTERS_PER_TOKEN) + other
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ChatRole;

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage { role: ChatRole::User, content: text.to_owned() }]
    }

    #[test]
    fn an_english_sentence_counts_about_four_characters_a_token() {
        // 44 ASCII characters; tiktoken's cl100k counts this sentence as 10 tokens.
        let sentence = "The quick brown fox jumps over the lazy dog.";
        assert_eq!(estimated_prompt_tokens(&user(sentence)), 11);
    }

    #[test]
    fn a_chinese_sentence_counts_one_token_a_character() {
        // 12 characters (11 Han and a full-width comma); characters ÷ 4 would say 3.
        let sentence = "今天天气很好，我们去公园";
        assert_eq!(sentence.chars().count(), 12);
        assert_eq!(estimated_prompt_tokens(&user(sentence)), 12);
    }

    #[test]
    fn mixed_text_and_several_messages_add_up() {
        let messages = vec![
            ChatMessage { role: ChatRole::System, content: "Be brief.".to_owned() },
            ChatMessage { role: ChatRole::User, content: "Translate 你好".to_owned() },
        ];
        // ASCII: 9 + 10 = 19 characters → 5 tokens; plus 2 Han characters.
        assert_eq!(estimated_prompt_tokens(&messages), 7);
        assert_eq!(estimated_prompt_tokens(&[]), 0);
    }
}
