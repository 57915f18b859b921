-- Trace search (GET /v1/traces?q=) covers what was asked as well as the
-- answer: the text of the chat messages (string contents and the text
-- parts of content arrays) or a completion's prompt string, beside
-- reasoning_content and content. The column is rebuilt, so existing traces
-- become searchable by their prompts too.
DROP INDEX traces_search_idx;
ALTER TABLE traces DROP COLUMN search;
ALTER TABLE traces ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple',
        coalesce(jsonb_path_query_array(messages, 'lax $[*].content ? (@.type() == "string")')::text, '')
        || ' ' || coalesce(jsonb_path_query_array(messages, 'lax $[*].content[*].text')::text, '')
        || ' ' || coalesce(CASE WHEN jsonb_typeof(prompt) = 'string' THEN prompt #>> '{}' END, '')
        || ' ' || coalesce(reasoning_content, '') || ' ' || coalesce(content, ''))
) STORED;
CREATE INDEX traces_search_idx ON traces USING gin (search);
