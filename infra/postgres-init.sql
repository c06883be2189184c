-- Kestra keeps its own state in a database beside the collector's.
CREATE DATABASE kestra;
