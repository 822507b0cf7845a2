//! The fixed vocabulary synthetic prompts are drawn from.
//!
//! Short, frequent English words: in the BPE tokenizers of common LLMs (GPT-2/Llama/Qwen/Mistral
//! families) each of them, preceded by a space, is a single token, so a prompt of N words is close
//! to N tokens whatever tokenizer the target uses. The list is part of the workload definition:
//! changing it changes every synthetic prompt (and the workload hash).

pub const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "she", "other", "its", "may",
    "these", "what", "them", "than", "some", "him", "time", "into", "only", "do", "our", "could",
    "new", "any", "first", "then", "also", "after", "your", "like", "over", "such", "made", "many",
    "most", "must", "before", "two", "should", "well", "where", "much", "each", "those", "how",
    "state", "great", "good", "through", "make", "now", "people", "world", "years", "same", "life",
    "back", "work", "between", "part", "under", "long", "while", "last", "might", "never", "used",
    "day", "own", "water", "against", "being", "high", "place", "small", "found", "take", "still",
    "year", "point", "three", "right", "without", "come", "both", "little", "since", "every",
    "house", "end", "number", "general", "system", "set", "within", "public", "give", "however",
    "under", "few", "course", "because", "large", "order", "hand", "form", "school", "old", "case",
    "power", "less", "light", "group", "city", "line", "home", "side", "water", "free", "early",
    "open", "name", "given", "real", "thing", "here", "night", "best", "play", "game", "body",
    "mind", "word", "head", "story", "book", "music", "road", "river", "tree", "field", "table",
    "door", "voice", "color", "sun", "moon", "star", "sea", "food", "land", "king", "war", "art",
    "law", "fire", "money", "love", "face", "eye",
];

#[cfg(test)]
mod tests {
    #[test]
    fn words_are_plain_lowercase() {
        assert!(super::WORDS.len() >= 200);
        for w in super::WORDS {
            assert!(
                !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase()),
                "{w}"
            );
        }
    }
}
