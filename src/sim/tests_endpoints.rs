//! Tests of the endpoints added for groups, brands, Help Center, community, ticket events, metric sets and side conversations.
