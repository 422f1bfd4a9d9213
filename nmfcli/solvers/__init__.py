"""Pure update steps and losses: arrays in, arrays out; X only through an engine."""
