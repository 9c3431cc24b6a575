"""What the pages compute from a forward pass: attention, generation, heads, masks, comparisons."""
