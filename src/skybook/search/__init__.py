"""Search: priced offers for one-way and round trips over the live inventory."""
