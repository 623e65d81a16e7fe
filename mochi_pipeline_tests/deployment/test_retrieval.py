"""BM25 over code: identifiers whole and split, rare terms weigh more."""

from mochi_pipeline.deployment.retrieval import BM25Index, code_terms


def test_identifiers_count_whole_and_split():
    assert code_terms("parse_config(HTTPClient)") == ["parse_config", "parse", "config", "httpclient", "http",
                                                       "client"]
    assert code_terms("def self return x") == []  # keywords and one-letter names rank nothing


def test_search_matches_words_to_identifiers_and_prefers_rare_terms():
    docs = [
        "def parse_config(path):\n    return load(path)",
        "class HTTPClient:\n    def get(self, url):\n        return fetch(url)",
        "def load(path):\n    return open(path).read()",
        "def save(path, data):\n    open(path, 'w').write(data)",
    ]
    index = BM25Index(docs)
    assert [i for i, _ in index.search("how do I parse the config", k=2)][0] == 0
    assert index.search("http client get", k=1)[0][0] == 1
    # `path` is in three documents, `load` in two: the document with both ranks above those with `path` only
    ranked = [i for i, _ in index.search("load path", k=4)]
    assert ranked[:2] == [2, 0] or ranked[:2] == [0, 2]
    assert index.idf("path") < index.idf("load") < index.idf("fetch")
    assert index.search("nothing matches zebra") == []
