"""OGC 3D Tiles 1.1 from PostGIS: one placement (:mod:`.placement`), one mesh contract
(:mod:`.mesh`), one writer (:mod:`.glb`, :mod:`.tileset`), a build plan of independent tile
jobs (:mod:`.plan`), and one module per source in :mod:`.sources`."""
