-- Management token ids are never reused, as incident and project ids are
-- not (0007): tokens can be revoked by id, and a revoked token's id handed
-- to the next token would let a stale `token revoke ID` or
-- `DELETE /api/v1/tokens/{id}` revoke the wrong one, and make the log's
-- record of a revocation name two tokens. New tokens are numbered above
-- the largest id ever deleted (`id_floors`) and the largest left.
CREATE TRIGGER api_tokens_ids_never_reused AFTER DELETE ON api_tokens
BEGIN
    INSERT OR REPLACE INTO id_floors (name, floor)
    VALUES ('api_tokens',
            MAX(OLD.id, COALESCE((SELECT floor FROM id_floors WHERE name = 'api_tokens'), 0)));
END;
