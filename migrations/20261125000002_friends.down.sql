DROP TABLE friendships;
DROP TABLE friend_requests;
DROP TYPE friend_request_status;
