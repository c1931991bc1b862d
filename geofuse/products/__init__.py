"""Products of a mask: polygons, quick-look pictures and facts about models and scenes."""
